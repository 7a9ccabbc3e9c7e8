package ignite

// Every command line the engine runs is built here, by pure functions, so
// that tests can check each argument without running anything. The
// arguments exclude the program itself.

// logLevelFlag and quietLevel keep Ignite's log lines (info and warnings,
// which Ignite v0.10 writes to stdout) out of the output of the commands
// whose output is parsed or kept; fatal errors still appear.
const (
	logLevelFlag = "--log-level"
	quietLevel   = "error"
)

// runArgs is `ignite run` for the VM config at configPath: the seed's
// `ignite run --config func-handler.yml`, with the runtime and network
// plugin pinned so that the host's Ignite configuration cannot change
// them, and the name given again so that a missing name fails instead of
// becoming a random one.
//
// --debug keeps the sandbox container after the VM stops (and nothing
// else): `ignite logs` refuses a stopped VM, so the console of a VM that
// died is only readable from the kept container (`docker logs`). Stop
// removes it with `ignite rm -f`.
//
// No --ssh: the VM config carries no ssh either, so Ignite neither
// generates a key nor waits for an SSH server. (`--ssh=false` is not a way
// to say so: Ignite v0.10 reads "false" as the path of a public key and
// fails with `invalid SSH key: false.pub`.)
func runArgs(configPath, name, runtime, network string) []string {
	return []string{
		"run",
		"--config", configPath,
		"--name", name,
		"--runtime", runtime,
		"--network-plugin", network,
		"--debug",
	}
}

// inspectArgs prints the VM object as JSON (Ignite's v1alpha4 encoding).
func inspectArgs(uid string) []string {
	return append([]string{"inspect", "vm", uid, "--output", "json"}, logLevelFlag, quietLevel)
}

// statusTemplate renders a VM's running state for statusArgs.
const statusTemplate = "{{.Status.Running}}"

// statusArgs asks `ignite ps` whether the VM runs. Unlike inspect, ps asks
// the container runtime rather than trusting the stored object, so it sees
// a sandbox container that died without updating it. It prints "true",
// "false", or nothing when Ignite no longer knows the VM.
func statusArgs(uid string) []string {
	return append([]string{"ps", "--all", "--filter", "{{.ObjectMeta.UID}}=" + uid, "--template", statusTemplate}, logLevelFlag, quietLevel)
}

// listTemplate renders one line per VM for listArgs: UID, then the value
// of LabelOwner ("" when unset).
const listTemplate = `{{.GetUID}} {{index .ObjectMeta.Labels "` + LabelOwner + `"}}`

// listArgs lists every VM Ignite knows with its owner label.
func listArgs() []string {
	return append([]string{"ps", "--all", "--template", listTemplate}, logLevelFlag, quietLevel)
}

// logsArgs prints the console output of a running VM.
func logsArgs(uid string) []string {
	return append([]string{"logs", uid}, logLevelFlag, quietLevel)
}

// rmArgs removes a VM, killing it first if it runs.
func rmArgs(uid string) []string {
	return []string{"rm", "--force", uid}
}

// versionArgs prints Ignite's version alone (e.g. "v0.10.0").
func versionArgs() []string {
	return []string{"version", "--output", "short"}
}

// dockerLogsArgs prints a container's output: the console of a stopped VM
// whose container --debug kept.
func dockerLogsArgs(containerID string) []string {
	return []string{"logs", containerID}
}

// dockerImageArgs succeeds only when the Docker engine holds the image.
func dockerImageArgs(image string) []string {
	return []string{"image", "inspect", "--format", "{{.Id}}", image}
}

// containerdNamespace is the containerd namespace Ignite keeps its images,
// sandbox containers and snapshots in.
const containerdNamespace = "firecracker"

// ctrImageArgs lists the images of Ignite's containerd namespace whose
// name is ref (a normalized reference such as
// docker.io/weaveworks/ignite:v0.10.0); the output is empty when absent.
func ctrImageArgs(ref string) []string {
	return []string{"--namespace", containerdNamespace, "images", "list", "--quiet", "name==" + ref}
}
