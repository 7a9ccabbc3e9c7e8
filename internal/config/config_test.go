package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// defaults is written out by hand so that a change to the settings table
// cannot silently change a default.
func defaults() Config {
	return Config{
		Listen:            ":8080",
		FunctionsDir:      "./functions",
		StateDir:          "/var/lib/faas",
		KernelDir:         "/usr/lib/faas/kernel",
		AgentBin:          "/usr/lib/faas/agent",
		RuntimesDir:       "/usr/lib/faas/runtimes",
		VMTemplate:        "config/func-handler.yml",
		QEMUBin:           "qemu-system-x86_64",
		Engine:            "auto",
		Accel:             "auto",
		LogLevel:          slog.LevelInfo,
		APIToken:          "",
		Egress:            false,
		Snapshots:         true,
		InvokeTimeout:     30 * time.Second,
		BootWait:          30 * time.Second,
		Debounce:          500 * time.Millisecond,
		ShutdownTimeout:   20 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxBody:           10 << 20,
		LogsMaxSize:       8 << 20,
		DefaultMemory:     0,
		DefaultCPUs:       0,
		MinReplicas:       1,
		MaxReplicas:       1,
		Concurrency:       8,
		Queue:             64,
		TargetUtilization: 0.7,
		AsyncConfig: AsyncConfig{
			AsyncMaxRetries:   3,
			AsyncRetryBackoff: time.Second,
			AsyncResultTTL:    24 * time.Hour,
			AsyncResultBytes:  4 << 10,
			AsyncMaxBytes:     0,
		},
		UploadConfig: UploadConfig{Uploads: "auto"},
	}.withIsolationDefaults()
}

// withIsolationDefaults sets the isolation block's defaults, by hand.
func (c Config) withIsolationDefaults() Config {
	c.DepsTimeout, c.BuildCABundle = 10*time.Minute, "/etc/ssl/certs/ca-certificates.crt" // the dependency installs' defaults too
	c.DiskConfig = DiskConfig{KeepVersions: 2, GCInterval: 10 * time.Minute, StateBudget: "80%"}
	c.PrepareTimeout, c.ConsoleMaxSize, c.MemoryBudget = 15*time.Minute, MiB, "75%" // and the limits'
	c.VMUIDBase, c.VMUIDCount = 40000, 1000
	c.EgressDeny = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}
	c.PolicyAllowedImages = []string{}
	c.PolicyMaxMemory, c.PolicyMaxCPUs, c.PolicyMaxReplicas = 2*GiB, 4, 10
	c.PolicyMaxConcurrency, c.PolicyMaxTimeout, c.PolicyAllowEgress = 1000, 15*time.Minute, "auto"
	return c
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// inEmptyDir runs the test from an empty directory, so the default
// config/appliance.yaml is missing.
func inEmptyDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	const fileYAML = `
listen: ":9000"
engine: qemu
accel: tcg
log_level: debug
max_body: 1GiB
default_memory: 512MB
egress: true
target_utilization: 0.5
default_cpus: 2
debounce: 1s
api_token: from-file
`
	tests := []struct {
		name string
		// file, when set, is written to a temporary file passed with --config
		// (or FAAS_CONFIG when viaEnv), or to the default path when atDefault.
		file      string
		atDefault bool
		viaEnv    bool
		args      []string
		env       map[string]string
		want      func(c *Config)
	}{
		{name: "defaults without a file", want: func(c *Config) {}},
		{name: "file", file: fileYAML, want: func(c *Config) {
			c.Listen, c.Engine, c.Accel, c.LogLevel = ":9000", "qemu", "tcg", slog.LevelDebug
			c.MaxBody, c.DefaultMemory, c.Egress, c.TargetUtilization = GiB, 512*MiB, true, 0.5
			c.DefaultCPUs, c.Debounce, c.APIToken = 2, time.Second, "from-file"
		}},
		{name: "file at the default path", file: "listen: 127.0.0.1:7000\n", atDefault: true, want: func(c *Config) {
			c.Listen = "127.0.0.1:7000"
		}},
		{name: "file named by FAAS_CONFIG", file: "queue: 3\n", viaEnv: true, want: func(c *Config) {
			c.Queue = 3
		}},
		{name: "env overrides file", file: fileYAML,
			env: map[string]string{"FAAS_LISTEN": ":9100", "FAAS_EGRESS": "false", "FAAS_MAX_BODY": "512KB", "FAAS_API_TOKEN": "from-env"},
			want: func(c *Config) {
				c.Listen, c.Engine, c.Accel, c.LogLevel = ":9100", "qemu", "tcg", slog.LevelDebug
				c.MaxBody, c.DefaultMemory, c.Egress, c.TargetUtilization = 512*KiB, 512*MiB, false, 0.5
				c.DefaultCPUs, c.Debounce, c.APIToken = 2, time.Second, "from-env"
			}},
		{name: "flag overrides env", file: fileYAML,
			env:  map[string]string{"FAAS_LISTEN": ":9100", "FAAS_ENGINE": "ignite", "FAAS_ACCEL": "kvm"},
			args: []string{"--listen", ":9200", "--engine=qemu", "--boot-wait", "2m", "--egress=false"},
			want: func(c *Config) {
				c.Listen, c.Engine, c.Accel, c.LogLevel = ":9200", "qemu", "kvm", slog.LevelDebug
				c.MaxBody, c.DefaultMemory, c.Egress, c.TargetUtilization = GiB, 512*MiB, false, 0.5
				c.DefaultCPUs, c.Debounce, c.APIToken, c.BootWait = 2, time.Second, "from-file", 2*time.Minute
			}},
		{name: "key without a value keeps its default", file: "engine:\napi_token:\n", want: func(c *Config) {}},
		{name: "empty env counts as unset", env: map[string]string{"FAAS_LISTEN": "", "FAAS_ENGINE": ""}, want: func(c *Config) {}},
		{name: "every env name", env: map[string]string{
			"FAAS_LISTEN": "127.0.0.1:1", "FAAS_FUNCTIONS_DIR": "/f", "FAAS_STATE_DIR": "/s", "FAAS_KERNEL_DIR": "/k",
			"FAAS_AGENT_BIN": "/a", "FAAS_RUNTIMES_DIR": "/r", "FAAS_VM_TEMPLATE": "/t.yml", "FAAS_QEMU_BIN": "/q",
			"FAAS_ENGINE": "ignite", "FAAS_ACCEL": "kvm", "FAAS_LOG_LEVEL": "error", "FAAS_API_TOKEN": "tok",
			"FAAS_EGRESS": "true", "FAAS_SNAPSHOTS": "false", "FAAS_INVOKE_TIMEOUT": "1s", "FAAS_BOOT_WAIT": "2s", "FAAS_DEBOUNCE": "3s",
			"FAAS_SHUTDOWN_TIMEOUT": "4s", "FAAS_IDLE_TIMEOUT": "5s", "FAAS_MAX_BODY": "1MB", "FAAS_DEFAULT_MEMORY": "1GiB",
			"FAAS_SECRETS_DIR": "/sec", "FAAS_LOGS_MAX_SIZE": "2MB",
			"FAAS_DEFAULT_CPUS": "4", "FAAS_MIN_REPLICAS": "0", "FAAS_MAX_REPLICAS": "5", "FAAS_CONCURRENCY": "6",
			"FAAS_QUEUE": "0", "FAAS_TARGET_UTILIZATION": "1",
			"FAAS_NATS_URL": "nats://n:4222", "FAAS_ASYNC_MAX_RETRIES": "1", "FAAS_ASYNC_RETRY_BACKOFF": "6s",
			"FAAS_ASYNC_RESULT_TTL": "7s", "FAAS_ASYNC_RESULT_BYTES": "8KB", "FAAS_ASYNC_MAX_BYTES": "9MB",
			"FAAS_CALLBACK_HOSTS": "h.example", "FAAS_UPLOADS_DIR": "/u", "FAAS_UPLOADS": "on",
		}, want: func(c *Config) {
			*c = Config{Listen: "127.0.0.1:1", FunctionsDir: "/f", StateDir: "/s", KernelDir: "/k", AgentBin: "/a",
				RuntimesDir: "/r", VMTemplate: "/t.yml", QEMUBin: "/q", Engine: "ignite", Accel: "kvm",
				LogLevel: slog.LevelError, APIToken: "tok", Egress: true, InvokeTimeout: time.Second,
				BootWait: 2 * time.Second, Debounce: 3 * time.Second, ShutdownTimeout: 4 * time.Second,
				IdleTimeout: 5 * time.Second, MaxBody: MiB, DefaultMemory: GiB, DefaultCPUs: 4, MinReplicas: 0,
				SecretsDir: "/sec", LogsMaxSize: 2 * MiB,
				MaxReplicas: 5, Concurrency: 6, Queue: 0, TargetUtilization: 1,
				AsyncConfig: AsyncConfig{NATSURL: "nats://n:4222", AsyncMaxRetries: 1, AsyncRetryBackoff: 6 * time.Second,
					AsyncResultTTL: 7 * time.Second, AsyncResultBytes: 8 * KiB, AsyncMaxBytes: 9 * MiB, CallbackHosts: "h.example"},
				UploadConfig: UploadConfig{UploadsDir: "/u", Uploads: "on"}}.withIsolationDefaults()
		}},
		{name: "every flag name", args: []string{
			"--listen=[::1]:2", "--functions-dir=/f", "--state-dir=/s", "--kernel-dir=/k", "--agent-bin=/a",
			"--runtimes-dir=/r", "--vm-template=/t.yml", "--qemu-bin=/q", "--engine=qemu", "--accel=tcg",
			"--log-level=warn", "--api-token=tok", "--egress", "--snapshots=false", "--invoke-timeout=1s", "--boot-wait=2s",
			"--debounce=3s", "--shutdown-timeout=4s", "--idle-timeout=5s", "--max-body=1024", "--default-memory=64MB",
			"--default-cpus=2", "--min-replicas=2", "--max-replicas=3", "--concurrency=1", "--queue=7",
			"--target-utilization=0.25", "--nats-listen=127.0.0.1:0", "--async-max-retries=2",
			"--async-retry-backoff=3s", "--async-result-ttl=4s", "--async-result-bytes=5KB", "--async-max-bytes=6MB",
			"--callback-hosts=127.0.0.1", "--secrets-dir=/sec", "--logs-max-size=1MB", "--uploads-dir=/u", "--uploads=off",
		}, want: func(c *Config) {
			*c = Config{Listen: "[::1]:2", FunctionsDir: "/f", StateDir: "/s", KernelDir: "/k", AgentBin: "/a",
				RuntimesDir: "/r", VMTemplate: "/t.yml", QEMUBin: "/q", Engine: "qemu", Accel: "tcg",
				LogLevel: slog.LevelWarn, APIToken: "tok", Egress: true, InvokeTimeout: time.Second,
				BootWait: 2 * time.Second, Debounce: 3 * time.Second, ShutdownTimeout: 4 * time.Second,
				IdleTimeout: 5 * time.Second, MaxBody: KiB, DefaultMemory: 64 * MiB, DefaultCPUs: 2, MinReplicas: 2,
				SecretsDir: "/sec", LogsMaxSize: MiB,
				MaxReplicas: 3, Concurrency: 1, Queue: 7, TargetUtilization: 0.25,
				AsyncConfig: AsyncConfig{NATSListen: "127.0.0.1:0", AsyncMaxRetries: 2, AsyncRetryBackoff: 3 * time.Second,
					AsyncResultTTL: 4 * time.Second, AsyncResultBytes: 5 * KiB, AsyncMaxBytes: 6 * MiB, CallbackHosts: "127.0.0.1"},
				UploadConfig: UploadConfig{UploadsDir: "/u", Uploads: "off"}}.withIsolationDefaults()
		}},
		{name: "isolation and policy from the file", file: `
vm_uid_base: 60000
vm_uid_count: 50
egress_deny: [10.0.0.0/8, 192.0.2.7]
policy:
  allowed_images: ["python:*", "registry.example.com/team/*"]
  max_memory: 1GiB
  max_cpus: 2
  max_replicas: 3
  max_concurrency: 16
  max_timeout: 1m
  allow_egress: true
`, want: func(c *Config) {
			c.VMUIDBase, c.VMUIDCount, c.EgressDeny = 60000, 50, []string{"10.0.0.0/8", "192.0.2.7"}
			c.PolicyAllowedImages = []string{"python:*", "registry.example.com/team/*"}
			c.PolicyMaxMemory, c.PolicyMaxCPUs, c.PolicyMaxReplicas = GiB, 2, 3
			c.PolicyMaxConcurrency, c.PolicyMaxTimeout, c.PolicyAllowEgress = 16, time.Minute, "true"
		}},
		{name: "isolation and policy from the environment", env: map[string]string{
			"FAAS_VM_UID_BASE": "0", "FAAS_EGRESS_DENY": "none", "FAAS_POLICY_ALLOWED_IMAGES": "python:*, node:*",
			"FAAS_POLICY_MAX_MEMORY": "512MB", "FAAS_POLICY_MAX_CPUS": "1", "FAAS_POLICY_MAX_REPLICAS": "2",
			"FAAS_POLICY_MAX_CONCURRENCY": "8", "FAAS_POLICY_MAX_TIMEOUT": "30s", "FAAS_POLICY_ALLOW_EGRESS": "false",
			"FAAS_VM_UID_COUNT": "7",
		}, want: func(c *Config) {
			c.VMUIDBase, c.VMUIDCount, c.EgressDeny = 0, 7, []string{}
			c.PolicyAllowedImages = []string{"python:*", "node:*"}
			c.PolicyMaxMemory, c.PolicyMaxCPUs, c.PolicyMaxReplicas = 512*MiB, 1, 2
			c.PolicyMaxConcurrency, c.PolicyMaxTimeout, c.PolicyAllowEgress = 8, 30*time.Second, "false"
		}},
		{name: "isolation and policy flags", args: []string{
			"--vm-uid-base=50000", "--vm-uid-count=10", "--egress-deny=10.0.0.0/8", "--policy-allowed-images=python:*",
			"--policy-max-memory=1GiB", "--policy-max-cpus=8", "--policy-max-replicas=20", "--policy-max-concurrency=5000",
			"--policy-max-timeout=1h", "--policy-allow-egress=true",
		}, want: func(c *Config) {
			c.VMUIDBase, c.VMUIDCount, c.EgressDeny = 50000, 10, []string{"10.0.0.0/8"}
			c.PolicyAllowedImages = []string{"python:*"}
			c.PolicyMaxMemory, c.PolicyMaxCPUs, c.PolicyMaxReplicas = GiB, 8, 20
			c.PolicyMaxConcurrency, c.PolicyMaxTimeout, c.PolicyAllowEgress = 5000, time.Hour, "true"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := inEmptyDir(t)
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			args := tt.args
			want := defaults()
			tt.want(&want)
			if tt.file != "" {
				switch {
				case tt.atDefault:
					writeFile(t, filepath.Join(dir, DefaultFile), tt.file)
					want.File = DefaultFile
				case tt.viaEnv:
					want.File = writeFile(t, filepath.Join(dir, "env.yaml"), tt.file)
					env["FAAS_CONFIG"] = want.File
				default:
					want.File = writeFile(t, filepath.Join(dir, "flag.yaml"), tt.file)
					args = append([]string{"--config", want.File}, args...)
				}
			}
			got, err := Load(args, envOf(env))
			if err != nil {
				t.Fatalf("Load: got error %v, want none", err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("Load:\ngot  %+v\nwant %+v", *got, want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string // written to FILE and passed with --config when set
		args []string
		env  map[string]string
		want string // the whole error, FILE replaced by the file's path
		// prefix: want is only the start of the error (the rest is the
		// YAML parser's).
		prefix bool
	}{
		{name: "unknown engine", env: map[string]string{"FAAS_ENGINE": "foo"},
			want: `FAAS_ENGINE: "foo" is not one of auto, qemu, ignite`},
		{name: "unknown accel", args: []string{"--accel", "hvf"},
			want: `--accel: "hvf" is not one of auto, kvm, tcg`},
		{name: "unknown log level in file", file: "log_level: verbose\n",
			want: `log_level in FILE: "verbose" is not one of debug, info, warn, error`},
		{name: "ignite with tcg", env: map[string]string{"FAAS_ENGINE": "ignite"}, args: []string{"--accel=tcg"},
			want: `--accel: "tcg" cannot be used with engine "ignite" (from FAAS_ENGINE): Firecracker needs KVM`},
		{name: "bad size", env: map[string]string{"FAAS_MAX_BODY": "10XB"},
			want: `FAAS_MAX_BODY: "10XB" is not a size such as 512KB, 10MB or 1GiB`},
		{name: "fractional size", env: map[string]string{"FAAS_MAX_BODY": "1.5MB"},
			want: `FAAS_MAX_BODY: "1.5MB" is not a size such as 512KB, 10MB or 1GiB`},
		{name: "zero size", file: "max_body: 0\n",
			want: `max_body in FILE: "0" must be a positive size`},
		{name: "memory too small", env: map[string]string{"FAAS_DEFAULT_MEMORY": "32MB"},
			want: `FAAS_DEFAULT_MEMORY: "32MB" is below the 64MB a guest needs`},
		{name: "memory not whole MB", env: map[string]string{"FAAS_DEFAULT_MEMORY": "100000KB"},
			want: `FAAS_DEFAULT_MEMORY: "100000KB" must be a whole number of MB`},
		{name: "bad duration", env: map[string]string{"FAAS_BOOT_WAIT": "soon"},
			want: `FAAS_BOOT_WAIT: "soon" is not a duration such as 500ms, 30s or 5m`},
		{name: "duration without unit in file", file: "debounce: 500\n",
			want: `debounce in FILE: "500" is not a duration such as 500ms, 30s or 5m`},
		{name: "zero invoke timeout", env: map[string]string{"FAAS_INVOKE_TIMEOUT": "0s"},
			want: `FAAS_INVOKE_TIMEOUT: "0s" must be a positive duration`},
		{name: "negative boot wait", args: []string{"--boot-wait=-1s"},
			want: `--boot-wait: "-1s" must be a positive duration`},
		{name: "zero debounce", env: map[string]string{"FAAS_DEBOUNCE": "0"},
			want: `FAAS_DEBOUNCE: "0" must be a positive duration`},
		{name: "zero shutdown timeout", env: map[string]string{"FAAS_SHUTDOWN_TIMEOUT": "0ms"},
			want: `FAAS_SHUTDOWN_TIMEOUT: "0ms" must be a positive duration`},
		{name: "zero idle timeout", env: map[string]string{"FAAS_IDLE_TIMEOUT": "0m"},
			want: `FAAS_IDLE_TIMEOUT: "0m" must be a positive duration`},
		{name: "listen without port", env: map[string]string{"FAAS_LISTEN": "8080"},
			want: `FAAS_LISTEN: "8080" is not host:port (such as :8080 or 127.0.0.1:8080)`},
		{name: "listen port out of range", env: map[string]string{"FAAS_LISTEN": ":99999"},
			want: `FAAS_LISTEN: ":99999" has no port number from 0 to 65535`},
		{name: "listen named port", env: map[string]string{"FAAS_LISTEN": "localhost:http"},
			want: `FAAS_LISTEN: "localhost:http" has no port number from 0 to 65535`},
		{name: "empty path in file", file: "functions_dir: \"\"\n",
			want: `functions_dir in FILE: "" must not be empty`},
		{name: "empty engine in file", file: "engine: \"\"\n",
			want: `engine in FILE: "" is not one of auto, qemu, ignite`},
		{name: "cpus not a number", env: map[string]string{"FAAS_DEFAULT_CPUS": "two"},
			want: `FAAS_DEFAULT_CPUS: "two" is not a whole number`},
		{name: "negative cpus", env: map[string]string{"FAAS_DEFAULT_CPUS": "-1"},
			want: `FAAS_DEFAULT_CPUS: "-1" must be at least 0`},
		{name: "memory below a guest's need", env: map[string]string{"FAAS_DEFAULT_MEMORY": "32MB"},
			want: `FAAS_DEFAULT_MEMORY: "32MB" is below the 64MB a guest needs`},
		{name: "negative min replicas", env: map[string]string{"FAAS_MIN_REPLICAS": "-1"},
			want: `FAAS_MIN_REPLICAS: "-1" must be at least 0`},
		{name: "zero max replicas", env: map[string]string{"FAAS_MAX_REPLICAS": "0"},
			want: `FAAS_MAX_REPLICAS: "0" must be at least 1`},
		{name: "max below min", env: map[string]string{"FAAS_MIN_REPLICAS": "3"},
			want: `max_replicas (default): "1" is below min_replicas 3 (from FAAS_MIN_REPLICAS)`},
		{name: "zero concurrency", args: []string{"--concurrency", "0"},
			want: `--concurrency: "0" must be at least 1`},
		{name: "negative queue", env: map[string]string{"FAAS_QUEUE": "-1"},
			want: `FAAS_QUEUE: "-1" must be at least 0`},
		{name: "utilization above 1", env: map[string]string{"FAAS_TARGET_UTILIZATION": "1.5"},
			want: `FAAS_TARGET_UTILIZATION: "1.5" must be above 0 and at most 1`},
		{name: "zero utilization", env: map[string]string{"FAAS_TARGET_UTILIZATION": "0"},
			want: `FAAS_TARGET_UTILIZATION: "0" must be above 0 and at most 1`},
		{name: "utilization not a number", env: map[string]string{"FAAS_TARGET_UTILIZATION": "most"},
			want: `FAAS_TARGET_UTILIZATION: "most" is not a number`},
		{name: "egress not a boolean", env: map[string]string{"FAAS_EGRESS": "maybe"},
			want: `FAAS_EGRESS: "maybe" is not a boolean (true or false)`},
		{name: "token value is never echoed", env: map[string]string{"FAAS_API_TOKEN": "s3cret with space"},
			want: `FAAS_API_TOKEN: value contains whitespace or control characters`},
		{name: "list value in file", file: "listen: [a, b]\n",
			want: `listen in FILE: must be a single value, not a list or a map`},
		{name: "date value in file", file: "listen: 2020-01-01\n",
			want: `listen in FILE: is not a plain value (quote it)`},
		{name: "all problems at once", env: map[string]string{"FAAS_ENGINE": "foo", "FAAS_QUEUE": "x"},
			want: "FAAS_ENGINE: \"foo\" is not one of auto, qemu, ignite\nFAAS_QUEUE: \"x\" is not a whole number"},
		{name: "unknown keys in file", file: "listne: :80\nqueue: 1\nboot: {wait: 1s}\npolicy: {max_mem: 1GB}\n",
			want: `config file FILE: unknown setting "boot.wait", "listne", "policy.max_mem"`},
		{name: "egress default on but not allowed", env: map[string]string{"FAAS_EGRESS": "true", "FAAS_POLICY_ALLOW_EGRESS": "false"},
			want: `FAAS_POLICY_ALLOW_EGRESS: "false" contradicts egress true (from FAAS_EGRESS): functions would get egress by default yet may not have it`},
		{name: "allow egress not a choice", env: map[string]string{"FAAS_POLICY_ALLOW_EGRESS": "yes"},
			want: `FAAS_POLICY_ALLOW_EGRESS: "yes" is not one of auto, true, false`},
		{name: "defaults over the policy", env: map[string]string{
			"FAAS_DEFAULT_MEMORY": "4GiB", "FAAS_DEFAULT_CPUS": "8", "FAAS_MAX_REPLICAS": "11", "FAAS_CONCURRENCY": "2000", "FAAS_INVOKE_TIMEOUT": "1h",
		}, want: "FAAS_DEFAULT_MEMORY: 4GiB is over policy.max_memory 2GiB (from policy.max_memory (default))\n" +
			"FAAS_DEFAULT_CPUS: 8 is over policy.max_cpus 4 (from policy.max_cpus (default))\n" +
			"FAAS_MAX_REPLICAS: 11 is over policy.max_replicas 10 (from policy.max_replicas (default))\n" +
			"FAAS_CONCURRENCY: 2000 is over policy.max_concurrency 1000 (from policy.max_concurrency (default))\n" +
			"FAAS_INVOKE_TIMEOUT: 1h0m0s is over policy.max_timeout 15m0s (from policy.max_timeout (default))"},
		{name: "bad egress deny", env: map[string]string{"FAAS_EGRESS_DENY": "10.0.0.0/8,example.com"},
			want: `FAAS_EGRESS_DENY: "10.0.0.0/8,example.com" has "example.com", which is not an IPv4 address or prefix such as 10.0.0.0/8`},
		{name: "image pattern allowing everything", file: "policy:\n  allowed_images: ['*']\n",
			want: `policy.allowed_images in FILE: "*" has "*": a pattern is an image reference, lowercase, where * matches any run of characters (a bare * would allow every image: list them)`},
		{name: "policy memory below a guest", env: map[string]string{"FAAS_POLICY_MAX_MEMORY": "32MB"},
			want: `FAAS_POLICY_MAX_MEMORY: "32MB" is below the 64MB a guest needs`},
		{name: "uid base negative", env: map[string]string{"FAAS_VM_UID_BASE": "-5"},
			want: `FAAS_VM_UID_BASE: "-5" must be 0, or a uid leaving room for 2 x vm_uid_count ids`},
		{name: "list item not plain", file: "egress_deny: [[1]]\n",
			want: `egress_deny in FILE: list item: must be a single value, not a list or a map`},
		{name: "bad yaml", file: "listen: [\n", want: `parsing config file FILE: `, prefix: true},
		{name: "explicit missing file", args: []string{"--config", "DIR/missing.yaml"},
			want: `reading config file: open DIR/missing.yaml: no such file or directory`},
		{name: "missing file named by FAAS_CONFIG", env: map[string]string{"FAAS_CONFIG": "DIR/missing.yaml"},
			want: `reading config file: open DIR/missing.yaml: no such file or directory`},
		{name: "unknown flag", args: []string{"--listn=:80"}, want: `parsing flags: unknown flag: --listn`},
		{name: "positional argument", args: []string{"serve"}, want: `parsing flags: unexpected argument "serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := inEmptyDir(t)
			fill := strings.NewReplacer("DIR", dir)
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = fill.Replace(a)
			}
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = fill.Replace(v)
			}
			want := fill.Replace(tt.want)
			if tt.file != "" {
				path := writeFile(t, filepath.Join(dir, "appliance.yaml"), tt.file)
				args = append([]string{"--config", path}, args...)
				want = strings.ReplaceAll(want, "FILE", path)
			}
			got, err := Load(args, envOf(env))
			if err == nil {
				t.Fatalf("Load: got %+v and no error, want error %q", got, want)
			}
			if tt.prefix {
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("Load: got error %q, want it to start with %q", err, want)
				}
				return
			}
			if err.Error() != want {
				t.Errorf("Load:\ngot error  %q\nwant error %q", err, want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Load: error %q echoes the API token", err)
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	inEmptyDir(t)
	for _, arg := range []string{"-h", "--help"} {
		t.Run(arg, func(t *testing.T) {
			_, err := Load([]string{arg}, nil)
			if !errors.Is(err, ErrHelp) {
				t.Errorf("Load(%s): got error %v, want ErrHelp", arg, err)
			}
		})
	}
}

// TestApplianceYAML checks that config/appliance.yaml documents every
// setting with its env name and flag, and that loading it gives the defaults.
func TestApplianceYAML(t *testing.T) {
	path, err := filepath.Abs(filepath.Join("..", "..", "config", "appliance.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	text := string(b)
	for _, s := range Settings() {
		t.Run(s.Key, func(t *testing.T) {
			// A dotted key is a setting of a section: "  leaf: " after
			// "section:".
			section, key, nested := strings.Cut(s.Key, ".")
			in, indent := text, ""
			if nested {
				i := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(section) + `:\s*$`).FindStringIndex(text)
				if i == nil {
					t.Fatalf("%s: got no %s: section, want one holding %s", path, section, key)
				}
				in, indent = text[i[1]:], "  "
			} else {
				key = s.Key
			}
			line := regexp.MustCompile(`(?m)^` + indent + regexp.QuoteMeta(key) + `: (.*)$`).FindStringSubmatch(in)
			if line == nil {
				t.Fatalf("%s: got no %q entry, want one set to its default %q", path, s.Key, s.Default)
			}
			v := strings.Trim(line[1], `"`)
			if strings.HasPrefix(v, "[") { // a YAML flow list
				v = strings.NewReplacer("[", "", "]", "", " ", "", `"`, "").Replace(v)
			}
			if v != s.Default {
				t.Errorf("%s: got %s: %s, want the default %q", path, s.Key, line[1], s.Default)
			}
			if want := fmt.Sprintf("env %s, --%s", s.Env, s.Flag); !strings.Contains(text, want) {
				t.Errorf("%s: got no comment naming %q, want one", path, want)
			}
		})
	}
	inEmptyDir(t)
	got, err := Load([]string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("Load(%s): got error %v, want none", path, err)
	}
	want := defaults()
	want.File = path
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Load(%s):\ngot  %+v\nwant %+v", path, *got, want)
	}
}

func TestSettingsNames(t *testing.T) {
	want := []string{
		"FAAS_LISTEN", "FAAS_FUNCTIONS_DIR", "FAAS_STATE_DIR", "FAAS_KERNEL_DIR", "FAAS_AGENT_BIN",
		"FAAS_RUNTIMES_DIR", "FAAS_VM_TEMPLATE", "FAAS_QEMU_BIN", "FAAS_ENGINE", "FAAS_ACCEL", "FAAS_LOG_LEVEL",
		"FAAS_API_TOKEN", "FAAS_EGRESS", "FAAS_SNAPSHOTS", "FAAS_INVOKE_TIMEOUT", "FAAS_BOOT_WAIT", "FAAS_DEBOUNCE",
		"FAAS_SHUTDOWN_TIMEOUT", "FAAS_IDLE_TIMEOUT", "FAAS_MAX_BODY", "FAAS_SECRETS_DIR", "FAAS_LOGS_MAX_SIZE", "FAAS_DEFAULT_MEMORY", "FAAS_DEFAULT_CPUS",
		"FAAS_MIN_REPLICAS", "FAAS_MAX_REPLICAS", "FAAS_CONCURRENCY", "FAAS_QUEUE", "FAAS_TARGET_UTILIZATION",
		"FAAS_VM_UID_BASE", "FAAS_VM_UID_COUNT", "FAAS_EGRESS_DENY", "FAAS_POLICY_ALLOWED_IMAGES",
		"FAAS_POLICY_MAX_MEMORY", "FAAS_POLICY_MAX_CPUS", "FAAS_POLICY_MAX_REPLICAS", "FAAS_POLICY_MAX_CONCURRENCY",
		"FAAS_POLICY_MAX_TIMEOUT", "FAAS_POLICY_ALLOW_EGRESS",
		"FAAS_NATS_URL", "FAAS_NATS_LISTEN", "FAAS_ASYNC_MAX_RETRIES", "FAAS_ASYNC_RETRY_BACKOFF", "FAAS_ASYNC_RESULT_TTL",
		"FAAS_ASYNC_RESULT_BYTES", "FAAS_ASYNC_MAX_BYTES", "FAAS_CALLBACK_HOSTS",
		"FAAS_UPLOADS_DIR", "FAAS_UPLOADS",
		"FAAS_PIP_INDEX_URL", "FAAS_NPM_REGISTRY", "FAAS_DEPS_TIMEOUT", "FAAS_BUILD_CA_BUNDLE",
		"FAAS_KEEP_VERSIONS", "FAAS_GC_INTERVAL", "FAAS_STATE_BUDGET",
		"FAAS_PREPARE_TIMEOUT", "FAAS_MAX_CONCURRENT_BOOTS", "FAAS_MEMORY_BUDGET", "FAAS_CONSOLE_MAX_SIZE",
	}
	var got []string
	usage := Usage()
	for _, s := range Settings() {
		got = append(got, s.Env)
		if !strings.Contains(usage, "--"+s.Flag+" ") || !strings.Contains(usage, s.Env) {
			t.Errorf("Usage(): got no line for --%s naming %s, want one", s.Flag, s.Env)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Settings() env names:\ngot  %v\nwant %v", got, want)
	}
}

func TestLogValueRedactsToken(t *testing.T) {
	tests := []struct {
		name, token, want string
	}{
		{name: "set", token: "s3cret", want: "[redacted]"},
		{name: "unset", token: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults()
			c.APIToken = tt.token
			var got, listen string
			for _, a := range c.LogValue().Group() {
				switch a.Key {
				case "api_token":
					got = a.Value.String()
				case "listen":
					listen = a.Value.String()
				}
			}
			if got != tt.want {
				t.Errorf("LogValue api_token: got %q, want %q", got, tt.want)
			}
			if listen != ":8080" {
				t.Errorf("LogValue listen: got %q, want %q", listen, ":8080")
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: MiB},
		{in: "100B", want: 100},
		{in: "512KB", want: 512 * KiB},
		{in: "512k", want: 512 * KiB},
		{in: "10MB", want: 10 * MiB},
		{in: "10 MiB", want: 10 * MiB},
		{in: "1GiB", want: GiB},
		{in: "2gb", want: 2 * GiB},
		{in: "3TB", want: 3 * TiB},
		{in: "", wantErr: true},
		{in: "MB", wantErr: true},
		{in: "-1MB", wantErr: true},
		{in: "1.5GB", wantErr: true},
		{in: "10XB", wantErr: true},
		{in: "9999999999999TB", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSize(%q): got error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q): got %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"}, {100, "100B"}, {1536 * KiB, "1536KiB"}, {10 * MiB, "10MiB"}, {GiB, "1GiB"}, {2 * TiB, "2TiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.in.String(); got != tt.want {
				t.Errorf("Size(%d).String(): got %q, want %q", int64(tt.in), got, tt.want)
			}
			back, err := ParseSize(tt.want)
			if err != nil || back != tt.in {
				t.Errorf("ParseSize(%q): got %d, %v, want %d", tt.want, back, err, tt.in)
			}
		})
	}
}

func TestResolveMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		in        string
		available int64
		want      int64
		err       bool
	}{
		{"75%", 8 << 30, 6 << 30, false},
		{"100%", 1 << 30, 1 << 30, false},
		{"2GiB", 8 << 30, 2 << 30, false},
		{"512MiB", 0, 512 << 20, false},
		{"off", 8 << 30, 0, false},
		{"0", 8 << 30, 0, false},
		{" None ", 8 << 30, 0, false},
		{"75%", 0, 0, true},
		{"150%", 8 << 30, 0, true},
		{"0%", 8 << 30, 0, true},
		{"-1GiB", 8 << 30, 0, true},
		{"lots", 8 << 30, 0, true},
		{"", 8 << 30, 0, true},
	} {
		got, err := ResolveMemoryBudget(tc.in, tc.available)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ResolveMemoryBudget(%q, %d) = %d, %v; want %d, error %v", tc.in, tc.available, got, err, tc.want, tc.err)
		}
	}
}
