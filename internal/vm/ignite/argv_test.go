package ignite

import (
	"slices"
	"testing"
)

func TestArgv(t *testing.T) {
	const uid = "0123456789abcdef"
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{
			name: "run with docker and cni",
			got:  runArgs("/state/ignite/"+uid+"/vm.yaml", "hello-"+uid, RuntimeDocker, NetworkCNI),
			want: []string{"run", "--config", "/state/ignite/" + uid + "/vm.yaml", "--name", "hello-" + uid,
				"--runtime", "docker", "--network-plugin", "cni", "--debug"},
		},
		{
			name: "run with containerd",
			got:  runArgs("/s/vm.yaml", "f-"+uid, RuntimeContainerd, NetworkCNI),
			want: []string{"run", "--config", "/s/vm.yaml", "--name", "f-" + uid,
				"--runtime", "containerd", "--network-plugin", "cni", "--debug"},
		},
		{
			name: "run with docker-bridge",
			got:  runArgs("/s/vm.yaml", "f-"+uid, RuntimeDocker, NetworkDockerBridge),
			want: []string{"run", "--config", "/s/vm.yaml", "--name", "f-" + uid,
				"--runtime", "docker", "--network-plugin", "docker-bridge", "--debug"},
		},
		{
			name: "inspect",
			got:  inspectArgs(uid),
			want: []string{"inspect", "vm", uid, "--output", "json", "--log-level", "error"},
		},
		{
			name: "status",
			got:  statusArgs(uid),
			want: []string{"ps", "--all", "--filter", "{{.ObjectMeta.UID}}=" + uid, "--template", "{{.Status.Running}}",
				"--log-level", "error"},
		},
		{
			name: "list",
			got:  listArgs(),
			want: []string{"ps", "--all", "--template", `{{.GetUID}} {{index .ObjectMeta.Labels "faasvm.io/owner"}}`,
				"--log-level", "error"},
		},
		{
			name: "logs",
			got:  logsArgs(uid),
			want: []string{"logs", uid, "--log-level", "error"},
		},
		{
			name: "rm",
			got:  rmArgs(uid),
			want: []string{"rm", "--force", uid},
		},
		{
			name: "version",
			got:  versionArgs(),
			want: []string{"version", "--output", "short"},
		},
		{
			name: "docker logs",
			got:  dockerLogsArgs("c0ffee"),
			want: []string{"logs", "c0ffee"},
		},
		{
			name: "docker image inspect",
			got:  dockerImageArgs("weaveworks/ignite:v0.10.0"),
			want: []string{"image", "inspect", "--format", "{{.Id}}", "weaveworks/ignite:v0.10.0"},
		},
		{
			name: "ctr images",
			got:  ctrImageArgs("docker.io/weaveworks/ignite:v0.10.0"),
			want: []string{"--namespace", "firecracker", "images", "list", "--quiet", "name==docker.io/weaveworks/ignite:v0.10.0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !slices.Equal(tt.got, tt.want) {
				t.Errorf("got  %q\nwant %q", tt.got, tt.want)
			}
		})
	}
}

func TestRunArgsNeverSSH(t *testing.T) {
	// Ignite v0.10 reads --ssh=false as a key path; a config with ssh would
	// make ignite run wait for an SSH server the image does not have.
	for _, a := range runArgs("/c", "n", RuntimeDocker, NetworkCNI) {
		if a == "--ssh" || len(a) > 5 && a[:6] == "--ssh=" {
			t.Errorf("run argv has %q", a)
		}
	}
}

func TestCommandName(t *testing.T) {
	tests := []struct {
		path string
		args []string
		want string
	}{
		{"/usr/bin/ignite", runArgs("/c", "n", RuntimeDocker, NetworkCNI), "ignite run"},
		{"ignite", inspectArgs("u"), "ignite inspect"},
		{"/x/docker", dockerLogsArgs("c"), "docker logs"},
		{"/x/ctr", ctrImageArgs("r"), "ctr images"},
		{"/x/ignite", []string{"--quiet"}, "ignite"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := commandName(tt.path, tt.args); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
