// Package config loads the appliance's settings and validates them once, at
// start.
//
// Each setting comes from, in increasing precedence: its default, the YAML
// file (config/appliance.yaml unless --config or FAAS_CONFIG names another),
// its FAAS_* environment variable, its command-line flag. Every setting has
// the same three names: the YAML key is lower_snake ("boot_wait"), the
// environment variable is FAAS_ plus the key in capitals ("FAAS_BOOT_WAIT"),
// the flag is the key in kebab case ("--boot-wait").
//
// An empty environment variable counts as unset, as in viper.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DefaultFile is the configuration file read when neither --config nor
// FAAS_CONFIG names one. Unlike a named file, it may be missing.
const DefaultFile = "config/appliance.yaml"

// Engines.
const (
	EngineAuto   = "auto"   // decided at start from what the host can run
	EngineQEMU   = "qemu"   // QEMU microvm, KVM or TCG
	EngineIgnite = "ignite" // Ignite / Firecracker, KVM only
)

// Accelerators for the qemu engine.
const (
	AccelAuto = "auto" // KVM when a probe guest boots under it, else TCG
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// ErrHelp is returned by Load when the arguments ask for help; print Usage.
var ErrHelp = pflag.ErrHelp

// Config is the appliance's validated configuration.
type Config struct {
	// File is the configuration file that was read, "" when none was.
	File string

	// Listen is the gateway's host:port.
	Listen string
	// FunctionsDir holds one folder per function.
	FunctionsDir string
	// StateDir holds caches, VM files and logs.
	StateDir string
	// SecretsDir holds the operator's secrets, one file per secret; ""
	// means none are offered.
	SecretsDir string
	// LogsMaxSize bounds one function's stored logs on disk.
	LogsMaxSize Size
	// KernelDir holds vmlinux, modules/*.ko and VERSION.
	KernelDir string
	// AgentBin is the static guest agent binary.
	AgentBin string
	// RuntimesDir holds one Dockerfile folder per runtime.
	RuntimesDir string
	// VMTemplate is the VM object template (Ignite v1alpha4 YAML).
	VMTemplate string
	// QEMUBin is the QEMU system emulator to run.
	QEMUBin string

	// Engine is EngineAuto, EngineQEMU or EngineIgnite.
	Engine string
	// Accel is AccelAuto, AccelKVM or AccelTCG.
	Accel string
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// APIToken, when not empty, is the bearer token /api/* requires.
	APIToken string
	// Egress lets guests open outbound connections by default.
	Egress bool
	// Snapshots starts instances from a per-version VM snapshot when the
	// engine can (false: every instance boots).
	Snapshots bool

	// InvokeTimeout bounds one invocation unless the function sets its own.
	InvokeTimeout time.Duration
	// BootWait is how long a request waits for a booting function.
	BootWait time.Duration
	// Debounce is how long the folder watcher waits for changes to settle.
	Debounce time.Duration
	// ShutdownTimeout bounds draining requests and stopping VMs.
	ShutdownTimeout time.Duration
	// IdleTimeout is how long a replica above MinReplicas may sit idle.
	IdleTimeout time.Duration

	// MaxBody is the largest request body the gateway accepts.
	MaxBody Size
	// DefaultMemory is a VM's memory unless the function sets its own; 0
	// leaves it to the VM template.
	DefaultMemory Size
	// DefaultCPUs is a VM's vCPU count unless the function sets its own; 0
	// leaves it to the VM template.
	DefaultCPUs int

	// MinReplicas is the number of instances kept running per function.
	MinReplicas int
	// MaxReplicas caps the instances per function.
	MaxReplicas int
	// Concurrency is the in-flight requests one replica takes.
	Concurrency int
	// Queue is the requests per function that may wait for a free slot.
	Queue int
	// TargetUtilization is the busy fraction of slots that triggers a scale-up.
	TargetUtilization float64

	// Isolation: who QEMU runs as, where egress guests may not go, and the
	// operator's policy for what a function folder may ask for.

	// VMUIDBase is the first user ID QEMU runs as (one uid per VM, from
	// two pools of VMUIDCount: without egress, then with); 0 runs QEMU as
	// the appliance's own user.
	VMUIDBase int
	// VMUIDCount is the size of each pool: the most VMs of a kind at once.
	VMUIDCount int
	// EgressDeny lists IPv4 prefixes guests with egress may not reach,
	// besides the appliance's own addresses, its gateways, its attached
	// networks and link-local addresses, which they never reach.
	EgressDeny []string
	// PolicyAllowedImages are the patterns (* matches any run of
	// characters) an image a function names must match; empty: functions
	// boot only the shipped runtimes.
	PolicyAllowedImages []string
	// PolicyMaxMemory, PolicyMaxCPUs, PolicyMaxReplicas,
	// PolicyMaxConcurrency and PolicyMaxTimeout bound what a function may
	// ask for (its VM memory and vCPUs, min/maxReplicas, concurrency and
	// invocation timeout).
	PolicyMaxMemory      Size
	PolicyMaxCPUs        int
	PolicyMaxReplicas    int
	PolicyMaxConcurrency int
	PolicyMaxTimeout     time.Duration
	// PolicyAllowEgress says whether a function may turn egress on:
	// "auto" (as Egress says: a function may turn egress on only when the
	// operator turned it on by default), "true" or "false".
	PolicyAllowEgress string

	// Asynchronous calls (async.go).
	AsyncConfig
	// The upload API (upload.go).
	UploadConfig

	// Dependency installs (deps.go).
	DepsConfig
	// The state directory's bounds (disk.go).
	DiskConfig
	// Time and resource limits (limits.go).
	LimitsConfig
}

// AllowEgress resolves PolicyAllowEgress: whether functions may have
// egress at all.
func (c *Config) AllowEgress() bool {
	switch c.PolicyAllowEgress {
	case "true":
		return true
	case "false":
		return false
	}
	return c.Egress
}

// Setting describes one setting, for documentation.
type Setting struct {
	Key     string // YAML key, e.g. "boot_wait"
	Env     string // environment variable, e.g. "FAAS_BOOT_WAIT"
	Flag    string // flag without dashes, e.g. "boot-wait"
	Default string // default, as it would be written
	Help    string // one-line meaning
}

// setting is one row of the settings table: its names, default, how to
// parse it into a Config field and what makes it valid.
type setting struct {
	key     string
	def     string
	typ     string // flag type shown in help: string, duration, size, int, float, bool, list
	help    string
	choices []string // when set, the value must be one of these
	secret  bool     // never echo the value in errors or logs
	// field returns the Config field the setting fills: *string,
	// *time.Duration, *Size, *int, *float64, *bool, *[]string or
	// *slog.Level.
	field func(c *Config) any
	// check reports what is wrong with the parsed value, "" when nothing.
	check func(c *Config) string
}

// A key with a dot is a setting of a YAML section ("policy.max_memory" is
// max_memory under policy:); its env name and flag join the parts
// (FAAS_POLICY_MAX_MEMORY, --policy-max-memory).
func (s *setting) env() string {
	return "FAAS_" + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_"))
}
func (s *setting) flag() string { return strings.NewReplacer("_", "-", ".", "-").Replace(s.key) }

// settings is the table every name, default, flag and check comes from.
// Built by a function so that no package-level state exists.
func settings() []setting {
	positive := func(f func(c *Config) time.Duration) func(c *Config) string {
		return func(c *Config) string {
			if f(c) <= 0 {
				return "must be a positive duration"
			}
			return ""
		}
	}
	atLeast := func(min int, f func(c *Config) int) func(c *Config) string {
		return func(c *Config) string {
			if f(c) < min {
				return fmt.Sprintf("must be at least %d", min)
			}
			return ""
		}
	}
	notEmpty := func(f func(c *Config) string) func(c *Config) string {
		return func(c *Config) string {
			if f(c) == "" {
				return "must not be empty"
			}
			return ""
		}
	}
	return append(append(append(append(append(append([]setting{
		{key: "listen", def: ":8080", typ: "string", help: "host:port the gateway listens on",
			field: func(c *Config) any { return &c.Listen }, check: checkListen},
		{key: "functions_dir", def: "./functions", typ: "string", help: "folder with one sub-folder per function",
			field: func(c *Config) any { return &c.FunctionsDir }, check: notEmpty(func(c *Config) string { return c.FunctionsDir })},
		{key: "state_dir", def: "/var/lib/faas", typ: "string", help: "caches, VM files and logs",
			field: func(c *Config) any { return &c.StateDir }, check: notEmpty(func(c *Config) string { return c.StateDir })},
		{key: "kernel_dir", def: "/usr/lib/faas/kernel", typ: "string", help: "guest kernel: vmlinux, modules/*.ko, VERSION",
			field: func(c *Config) any { return &c.KernelDir }, check: notEmpty(func(c *Config) string { return c.KernelDir })},
		{key: "agent_bin", def: "/usr/lib/faas/agent", typ: "string", help: "static guest agent binary (the guest's /init)",
			field: func(c *Config) any { return &c.AgentBin }, check: notEmpty(func(c *Config) string { return c.AgentBin })},
		{key: "runtimes_dir", def: "/usr/lib/faas/runtimes", typ: "string", help: "runtime Dockerfiles, one folder per runtime",
			field: func(c *Config) any { return &c.RuntimesDir }, check: notEmpty(func(c *Config) string { return c.RuntimesDir })},
		{key: "vm_template", def: "config/func-handler.yml", typ: "string", help: "VM object template (Ignite v1alpha4 YAML)",
			field: func(c *Config) any { return &c.VMTemplate }, check: notEmpty(func(c *Config) string { return c.VMTemplate })},
		{key: "qemu_bin", def: "qemu-system-x86_64", typ: "string", help: "QEMU system emulator (name on PATH or path)",
			field: func(c *Config) any { return &c.QEMUBin }, check: notEmpty(func(c *Config) string { return c.QEMUBin })},
		{key: "engine", def: EngineAuto, typ: "string", help: "VM engine: auto, qemu or ignite",
			choices: []string{EngineAuto, EngineQEMU, EngineIgnite},
			field:   func(c *Config) any { return &c.Engine }},
		{key: "accel", def: AccelAuto, typ: "string", help: "qemu accelerator: auto (KVM if a probe boots, else TCG), kvm or tcg",
			choices: []string{AccelAuto, AccelKVM, AccelTCG},
			field:   func(c *Config) any { return &c.Accel }},
		{key: "log_level", def: "info", typ: "string", help: "debug, info, warn or error",
			choices: []string{"debug", "info", "warn", "error"},
			field:   func(c *Config) any { return &c.LogLevel }},
		{key: "api_token", def: "", typ: "string", help: "bearer token required by /api/* (empty: no auth)", secret: true,
			field: func(c *Config) any { return &c.APIToken }, check: checkToken},
		{key: "egress", def: "false", typ: "bool", help: "let guests open outbound connections by default",
			field: func(c *Config) any { return &c.Egress }},
		{key: "snapshots", def: "true", typ: "bool", help: "start instances from a per-version VM snapshot when the engine can (false: every instance boots)",
			field: func(c *Config) any { return &c.Snapshots }},
		{key: "invoke_timeout", def: "30s", typ: "duration", help: "default per-invocation timeout",
			field: func(c *Config) any { return &c.InvokeTimeout }, check: positive(func(c *Config) time.Duration { return c.InvokeTimeout })},
		{key: "boot_wait", def: "30s", typ: "duration", help: "how long a request waits for a booting function before 503",
			field: func(c *Config) any { return &c.BootWait }, check: positive(func(c *Config) time.Duration { return c.BootWait })},
		{key: "debounce", def: "500ms", typ: "duration", help: "quiet time after a change in a function folder before redeploying",
			field: func(c *Config) any { return &c.Debounce }, check: positive(func(c *Config) time.Duration { return c.Debounce })},
		{key: "shutdown_timeout", def: "20s", typ: "duration", help: "bound on draining requests and stopping VMs at shutdown",
			field: func(c *Config) any { return &c.ShutdownTimeout }, check: positive(func(c *Config) time.Duration { return c.ShutdownTimeout })},
		{key: "idle_timeout", def: "5m", typ: "duration", help: "idle time after which a replica above min_replicas stops",
			field: func(c *Config) any { return &c.IdleTimeout }, check: positive(func(c *Config) time.Duration { return c.IdleTimeout })},
		{key: "max_body", def: "10MB", typ: "size", help: "largest request body accepted (413 above); units are binary",
			field: func(c *Config) any { return &c.MaxBody }, check: func(c *Config) string {
				if c.MaxBody <= 0 {
					return "must be a positive size"
				}
				return ""
			}},
		{key: "secrets_dir", def: "", typ: "string", help: "operator's secrets, one file per secret, named in function.yaml secrets: (empty: none)",
			field: func(c *Config) any { return &c.SecretsDir }},
		{key: "logs_max_size", def: "8MB", typ: "size", help: "bound on one function's stored logs on disk (rotated by size)",
			field: func(c *Config) any { return &c.LogsMaxSize }, check: func(c *Config) string {
				if c.LogsMaxSize < 64*KiB {
					return "must be at least 64KB"
				}
				return ""
			}},
		{key: "default_memory", def: "0", typ: "size", help: "VM memory unless the function sets its own (0: the VM template's)",
			field: func(c *Config) any { return &c.DefaultMemory }, check: func(c *Config) string {
				switch {
				case c.DefaultMemory == 0:
				case c.DefaultMemory < 64*MiB:
					return "is below the 64MB a guest needs"
				case c.DefaultMemory%MiB != 0:
					return "must be a whole number of MB"
				}
				return ""
			}},
		{key: "default_cpus", def: "0", typ: "int", help: "VM vCPUs unless the function sets its own (0: the VM template's)",
			field: func(c *Config) any { return &c.DefaultCPUs }, check: atLeast(0, func(c *Config) int { return c.DefaultCPUs })},
		{key: "min_replicas", def: "1", typ: "int", help: "instances kept running per function (0: scale to zero when idle)",
			field: func(c *Config) any { return &c.MinReplicas }, check: atLeast(0, func(c *Config) int { return c.MinReplicas })},
		{key: "max_replicas", def: "1", typ: "int", help: "most instances per function",
			field: func(c *Config) any { return &c.MaxReplicas }, check: atLeast(1, func(c *Config) int { return c.MaxReplicas })},
		{key: "concurrency", def: "8", typ: "int", help: "in-flight requests per replica",
			field: func(c *Config) any { return &c.Concurrency }, check: atLeast(1, func(c *Config) int { return c.Concurrency })},
		{key: "queue", def: "64", typ: "int", help: "requests per function that may wait for a free slot (429 beyond)",
			field: func(c *Config) any { return &c.Queue }, check: atLeast(0, func(c *Config) int { return c.Queue })},
		{key: "target_utilization", def: "0.7", typ: "float", help: "busy fraction of slots above which a replica is added",
			field: func(c *Config) any { return &c.TargetUtilization }, check: func(c *Config) string {
				if !(c.TargetUtilization > 0 && c.TargetUtilization <= 1) {
					return "must be above 0 and at most 1"
				}
				return ""
			}},
	}, isolationSettings()...), asyncSettings()...), uploadSettings()...), depsSettings()...), diskSettings()...), limitsSettings()...)
}

// isolationSettings are who QEMU runs as, where egress guests may not go,
// and the operator's policy (the YAML section policy:).
func isolationSettings() []setting {
	atLeast := func(min int, f func(c *Config) int) func(c *Config) string {
		return func(c *Config) string {
			if f(c) < min {
				return fmt.Sprintf("must be at least %d", min)
			}
			return ""
		}
	}
	return []setting{
		{key: "vm_uid_base", def: "40000", typ: "int", help: "first user id QEMU runs as, one per VM (0: the appliance's own user)",
			field: func(c *Config) any { return &c.VMUIDBase }, check: func(c *Config) string {
				if c.VMUIDBase < 0 || int64(c.VMUIDBase)+2*int64(max(c.VMUIDCount, 1)) > 1<<32-2 {
					return "must be 0, or a uid leaving room for 2 x vm_uid_count ids"
				}
				return ""
			}},
		{key: "vm_uid_count", def: "1000", typ: "int", help: "user ids per pool (VMs without / with egress): the most VMs of a kind at once",
			field: func(c *Config) any { return &c.VMUIDCount }, check: atLeast(1, func(c *Config) int { return c.VMUIDCount })},
		{key: "egress_deny", def: "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10", typ: "list",
			help:  "IPv4 prefixes egress guests may not reach besides local, link-local, gateway and attached networks (none: no more)",
			field: func(c *Config) any { return &c.EgressDeny }, check: checkPrefixes},
		{key: "policy.allowed_images", def: "", typ: "list",
			help:  "image patterns (* any run of characters) a function's image: may match; empty: only the shipped runtimes",
			field: func(c *Config) any { return &c.PolicyAllowedImages }, check: checkImagePatterns},
		{key: "policy.max_memory", def: "2GB", typ: "size", help: "most VM memory a function may ask for",
			field: func(c *Config) any { return &c.PolicyMaxMemory }, check: func(c *Config) string {
				if c.PolicyMaxMemory < 64*MiB {
					return "is below the 64MB a guest needs"
				}
				return ""
			}},
		{key: "policy.max_cpus", def: "4", typ: "int", help: "most vCPUs a function may ask for",
			field: func(c *Config) any { return &c.PolicyMaxCPUs }, check: atLeast(1, func(c *Config) int { return c.PolicyMaxCPUs })},
		{key: "policy.max_replicas", def: "10", typ: "int", help: "most replicas (minReplicas and maxReplicas) a function may ask for",
			field: func(c *Config) any { return &c.PolicyMaxReplicas }, check: atLeast(1, func(c *Config) int { return c.PolicyMaxReplicas })},
		{key: "policy.max_concurrency", def: "1000", typ: "int", help: "most in-flight requests per replica a function may ask for",
			field: func(c *Config) any { return &c.PolicyMaxConcurrency }, check: atLeast(1, func(c *Config) int { return c.PolicyMaxConcurrency })},
		{key: "policy.max_timeout", def: "15m", typ: "duration", help: "longest invocation timeout a function may ask for",
			field: func(c *Config) any { return &c.PolicyMaxTimeout }, check: func(c *Config) string {
				if c.PolicyMaxTimeout <= 0 {
					return "must be a positive duration"
				}
				return ""
			}},
		{key: "policy.allow_egress", def: "auto", typ: "string", help: "may a function turn egress on: auto (only when egress is on by default), true or false",
			choices: []string{"auto", "true", "false"},
			field:   func(c *Config) any { return &c.PolicyAllowEgress }},
	}
}

// checkPrefixes refuses egress_deny entries that are not IPv4 prefixes.
func checkPrefixes(c *Config) string {
	for _, p := range c.EgressDeny {
		if pr, err := netip.ParsePrefix(p); err == nil && pr.Addr().Is4() {
			continue
		}
		if a, err := netip.ParseAddr(p); err == nil && a.Is4() {
			continue
		}
		return fmt.Sprintf("has %q, which is not an IPv4 address or prefix such as 10.0.0.0/8", p)
	}
	return ""
}

// checkImagePatterns refuses patterns no image reference can match.
func checkImagePatterns(c *Config) string {
	for _, p := range c.PolicyAllowedImages {
		if strings.ContainsFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsUpper(r) }) || strings.Trim(p, "*") == "" {
			return fmt.Sprintf("has %q: a pattern is an image reference, lowercase, where * matches any run of characters (a bare * would allow every image: list them)", p)
		}
	}
	return ""
}

// Settings lists every setting with its names, default and meaning.
func Settings() []Setting {
	table := settings()
	out := make([]Setting, len(table))
	for i := range table {
		s := &table[i]
		out[i] = Setting{Key: s.key, Env: s.env(), Flag: s.flag(), Default: s.def, Help: s.help}
	}
	return out
}

// Usage is the flags' help text.
func Usage() string {
	flagSet, _ := newFlagSet(settings())
	return "Usage of appliance:\n" + flagSet.FlagUsages()
}

// rawFlag is a flag that keeps the text it was given; Load parses and
// checks it like any other source, so every error reads the same.
type rawFlag struct{ val, typ string }

func (f *rawFlag) String() string     { return f.val }
func (f *rawFlag) Set(v string) error { f.val = v; return nil }
func (f *rawFlag) Type() string       { return f.typ }

func newFlagSet(table []setting) (*pflag.FlagSet, map[string]*pflag.Flag) {
	set := pflag.NewFlagSet("appliance", pflag.ContinueOnError)
	set.SetOutput(io.Discard)
	set.Usage = func() {}
	set.SortFlags = false
	set.String("config", DefaultFile, "configuration file (env FAAS_CONFIG; the default may be missing)")
	flags := make(map[string]*pflag.Flag, len(table))
	for i := range table {
		s := &table[i]
		f := set.VarPF(&rawFlag{val: s.def, typ: s.typ}, s.flag(), "", fmt.Sprintf("%s (env %s)", s.help, s.env()))
		if s.typ == "bool" {
			f.NoOptDefVal = "true"
		}
		flags[s.key] = f
	}
	return set, flags
}

// Load reads the configuration from args (the command line without the
// program name), getenv (os.Getenv in production; nil means no environment)
// and the configuration file, and validates it. All problems are reported
// together, each naming where its value came from.
func Load(args []string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	table := settings()
	flagSet, flags := newFlagSet(table)
	if err := flagSet.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("parsing flags: %w", err)
	}
	if flagSet.NArg() > 0 {
		return nil, fmt.Errorf("parsing flags: unexpected argument %q", flagSet.Arg(0))
	}

	path, explicit := DefaultFile, false
	if v := getenv("FAAS_CONFIG"); v != "" {
		path, explicit = v, true
	}
	if f := flagSet.Lookup("config"); f.Changed {
		path, explicit = f.Value.String(), true
	}

	// viper holds the layers: defaults, then the file, then what the
	// environment or a flag overrides. Viper reads the environment only
	// from the process, so Load resolves env and flags itself (flag first)
	// and sets the winner, which keeps Load free of process state.
	v := viper.New()
	c := &Config{}
	var err error
	if c.File, err = readFile(v, path, explicit); err != nil {
		return nil, err
	}
	if err := checkKeys(v.AllKeys(), table, path); err != nil {
		return nil, err
	}

	var problems []error
	source := make(map[string]string, len(table))
	raw := make(map[string]string, len(table))
	for i := range table {
		s := &table[i]
		v.SetDefault(s.key, s.def)
		source[s.key] = s.key + " (default)"
		if v.InConfig(s.key) {
			source[s.key] = s.key + " in " + path
		}
		if e := getenv(s.env()); e != "" {
			v.Set(s.key, e)
			source[s.key] = s.env()
		}
		if f := flags[s.key]; f.Changed {
			v.Set(s.key, f.Value.String())
			source[s.key] = "--" + s.flag()
		}
		var val string
		var err error
		if s.typ == "list" {
			val, err = listValue(v.Get(s.key))
		} else {
			val, err = scalar(v.Get(s.key))
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", source[s.key], err))
			continue
		}
		raw[s.key] = val
		if p := s.parse(c, val); p != "" {
			problems = append(problems, s.problem(source[s.key], val, p))
			continue
		}
		if s.check != nil {
			if p := s.check(c); p != "" {
				problems = append(problems, s.problem(source[s.key], val, p))
			}
		}
	}
	if len(problems) == 0 && c.MaxReplicas < c.MinReplicas {
		problems = append(problems, fmt.Errorf("%s: %q is below min_replicas %d (from %s)",
			source["max_replicas"], raw["max_replicas"], c.MinReplicas, source["min_replicas"]))
	}
	if len(problems) == 0 && c.Egress && c.PolicyAllowEgress == "false" {
		problems = append(problems, fmt.Errorf("%s: %q contradicts egress true (from %s): functions would get egress by default yet may not have it",
			source["policy.allow_egress"], raw["policy.allow_egress"], source["egress"]))
	}
	if len(problems) == 0 {
		problems = append(problems, c.checkDefaultsWithinPolicy(source)...)
	}
	if len(problems) == 0 && c.Engine == EngineIgnite && c.Accel == AccelTCG {
		problems = append(problems, fmt.Errorf("%s: %q cannot be used with engine %q (from %s): Firecracker needs KVM",
			source["accel"], raw["accel"], c.Engine, source["engine"]))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}

// checkDefaultsWithinPolicy refuses defaults that the policy would make
// every function that relies on them invalid.
func (c *Config) checkDefaultsWithinPolicy(source map[string]string) []error {
	var problems []error
	over := func(key string, v, limit any, limitKey string) {
		problems = append(problems, fmt.Errorf("%s: %v is over %s %v (from %s)", source[key], v, limitKey, limit, source[limitKey]))
	}
	if c.DefaultMemory > c.PolicyMaxMemory {
		over("default_memory", c.DefaultMemory, c.PolicyMaxMemory, "policy.max_memory")
	}
	if c.DefaultCPUs > c.PolicyMaxCPUs {
		over("default_cpus", c.DefaultCPUs, c.PolicyMaxCPUs, "policy.max_cpus")
	}
	if c.MaxReplicas > c.PolicyMaxReplicas {
		over("max_replicas", c.MaxReplicas, c.PolicyMaxReplicas, "policy.max_replicas")
	}
	if c.Concurrency > c.PolicyMaxConcurrency {
		over("concurrency", c.Concurrency, c.PolicyMaxConcurrency, "policy.max_concurrency")
	}
	if c.InvokeTimeout > c.PolicyMaxTimeout {
		over("invoke_timeout", c.InvokeTimeout, c.PolicyMaxTimeout, "policy.max_timeout")
	}
	return problems
}

// readFile loads the YAML file at path into v and returns path, or ""
// when the file is missing and was not asked for explicitly.
func readFile(v *viper.Viper, path string, explicit bool) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		return "", nil
	case err != nil:
		return "", fmt.Errorf("reading config file: %w", err)
	}
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
		return "", fmt.Errorf("parsing config file %s: %w", path, err)
	}
	return path, nil
}

// problem formats "SOURCE: "VALUE" PROBLEM", leaving a secret's value out.
func (s *setting) problem(source, val, p string) error {
	if s.secret {
		return fmt.Errorf("%s: value %s", source, p)
	}
	return fmt.Errorf("%s: %q %s", source, val, p)
}

// parse stores val into s's Config field; it returns what is wrong, or "".
func (s *setting) parse(c *Config, val string) string {
	if len(s.choices) > 0 && !slices.Contains(s.choices, val) {
		return "is not one of " + strings.Join(s.choices, ", ")
	}
	switch f := s.field(c).(type) {
	case *string:
		*f = val
	case *slog.Level:
		if err := f.UnmarshalText([]byte(val)); err != nil {
			return "is not a log level"
		}
	case *bool:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return "is not a boolean (true or false)"
		}
		*f = b
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(val))
		if err != nil {
			return "is not a whole number"
		}
		*f = n
	case *float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return "is not a number"
		}
		*f = x
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(val))
		if err != nil {
			return "is not a duration such as 500ms, 30s or 5m"
		}
		*f = d
	case *Size:
		n, err := ParseSize(val)
		if err != nil {
			return err.Error()
		}
		*f = n
	case *[]string:
		*f = parseList(val)
	default:
		panic(fmt.Sprintf("config: setting %s has unsupported field type %T", s.key, f))
	}
	return ""
}

// parseList splits a list setting: comma-separated, blanks ignored; the
// single word none is the empty list (an empty variable counts as unset).
func parseList(val string) []string {
	out := []string{}
	if strings.TrimSpace(val) == "none" {
		return out
	}
	for _, item := range strings.Split(val, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// format renders s's Config field the way it would be written.
func (s *setting) format(c *Config) string {
	switch f := s.field(c).(type) {
	case *string:
		return *f
	case *slog.Level:
		return strings.ToLower(f.String())
	case *bool:
		return strconv.FormatBool(*f)
	case *int:
		return strconv.Itoa(*f)
	case *float64:
		return strconv.FormatFloat(*f, 'g', -1, 64)
	case *time.Duration:
		return f.String()
	case *Size:
		return f.String()
	case *[]string:
		return strings.Join(*f, ",")
	default:
		panic(fmt.Sprintf("config: setting %s has unsupported field type %T", s.key, f))
	}
}

// scalar renders a value from any layer as text; lists and maps are not
// settings, nor are values YAML reads as something else, such as a date.
func scalar(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(x), nil
	case []any, map[string]any:
		return "", errors.New("must be a single value, not a list or a map")
	default:
		return "", errors.New("is not a plain value (quote it)")
	}
}

// listValue renders a list setting from any layer as comma-separated
// text: a YAML list of plain values, or a string.
func listValue(v any) (string, error) {
	items, ok := v.([]any)
	if !ok {
		return scalar(v)
	}
	parts := make([]string, 0, len(items))
	for _, it := range items {
		s, err := scalar(it)
		if err != nil {
			return "", fmt.Errorf("list item: %w", err)
		}
		if strings.Contains(s, ",") {
			return "", fmt.Errorf("list item %q holds a comma", s)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "none", nil
	}
	return strings.Join(parts, ","), nil
}

// checkKeys rejects keys in the file that name no setting, so that a typo
// does not silently leave a default in place.
func checkKeys(keys []string, table []setting, path string) error {
	var unknown []string
	for _, k := range keys {
		if !slices.ContainsFunc(table, func(s setting) bool { return s.key == k }) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return fmt.Errorf("config file %s: unknown setting %s", path, strings.Join(unknown, ", "))
}

func checkListen(c *Config) string {
	_, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "is not host:port (such as :8080 or 127.0.0.1:8080)"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "has no port number from 0 to 65535"
	}
	return ""
}

func checkToken(c *Config) string {
	if strings.ContainsFunc(c.APIToken, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "contains whitespace or control characters"
	}
	return ""
}

// LogValue renders c for log/slog, with the API token redacted.
func (c *Config) LogValue() slog.Value {
	table := settings()
	attrs := make([]slog.Attr, 0, len(table)+1)
	attrs = append(attrs, slog.String("file", c.File))
	for i := range table {
		s := &table[i]
		val := s.format(c)
		if s.secret && val != "" {
			val = "[redacted]"
		}
		attrs = append(attrs, slog.String(s.key, val))
	}
	return slog.GroupValue(attrs...)
}
