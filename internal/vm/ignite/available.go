package ignite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/containers/image/docker/reference"

	"github.com/faasvm/appliance/internal/vm"
)

// Engine settings (FAAS_ENGINE) Select understands.
const (
	EngineAuto   = "auto"
	EngineQEMU   = "qemu"
	EngineIgnite = "ignite"
)

// SupportedVersion is the Ignite release this engine is written and tested
// against; Available accepts its patch releases.
const SupportedVersion = "v0.10.0"

// Probe is what Available checks a host with. Zero fields take defaults,
// except KVM, which the caller must provide.
type Probe struct {
	// IgnitePath is the ignite binary (default DefaultIgnitePath).
	IgnitePath string
	// Runtime is RuntimeDocker (default) or RuntimeContainerd: where the
	// sandbox image must be.
	Runtime string
	// DockerPath and CtrPath are the CLIs the sandbox image is looked up
	// with (defaults "docker" and "ctr").
	DockerPath, CtrPath string
	// SandboxImage is the image Ignite runs Firecracker in (default
	// vm.DefaultSandboxImage).
	SandboxImage string
	// LookPath finds a program (default exec.LookPath).
	LookPath func(file string) (string, error)
	// Run runs a program and returns its stdout; an error for a non-zero
	// exit (default: the engine's runner, which puts stderr in the error).
	Run func(ctx context.Context, path string, args ...string) ([]byte, error)
	// KVM says whether KVM really runs a guest on this host, and why not.
	// The qemu engine's probe (qemu.Engine.DetectAccel) answers that by
	// booting a guest under KVM. Required: nil counts as "no KVM".
	KVM func(ctx context.Context) (ok bool, reason string)
	// Timeout bounds each program run (default 30s).
	Timeout time.Duration
}

func (p Probe) withDefaults() Probe {
	if p.IgnitePath == "" {
		p.IgnitePath = DefaultIgnitePath
	}
	if p.Runtime == "" {
		p.Runtime = RuntimeDocker
	}
	if p.DockerPath == "" {
		p.DockerPath = DefaultDockerPath
	}
	if p.CtrPath == "" {
		p.CtrPath = "ctr"
	}
	if p.SandboxImage == "" {
		p.SandboxImage = vm.DefaultSandboxImage
	}
	if p.LookPath == nil {
		p.LookPath = exec.LookPath
	}
	if p.Timeout == 0 {
		p.Timeout = DefaultCommandTimeout
	}
	if p.Run == nil {
		timeout := p.Timeout
		p.Run = func(ctx context.Context, path string, args ...string) ([]byte, error) {
			return runner{}.run(ctx, timeout, path, args)
		}
	}
	return p
}

// Available says whether the ignite engine can run VMs on this host, and
// why (or why not), for logs and /api/functions. All of these must hold:
// the ignite binary is on PATH and is v0.10.x; the container runtime holds
// the Firecracker sandbox image (nothing is pulled); KVM really runs a
// guest. Every condition is checked, so the reason lists every problem.
func Available(ctx context.Context, p Probe) (ok bool, reason string) {
	p = p.withDefaults()
	var good, bad []string
	check := func(okMsg string, err error) {
		if err != nil {
			bad = append(bad, err.Error())
		} else {
			good = append(good, okMsg)
		}
	}

	path, err := p.LookPath(p.IgnitePath)
	if err == nil {
		var version string
		version, err = igniteVersion(ctx, p, path)
		check(fmt.Sprintf("ignite %s at %s", version, path), err)
	} else {
		check("", fmt.Errorf("no ignite binary: %w", err))
	}

	check(fmt.Sprintf("sandbox image %s present (%s)", p.SandboxImage, p.Runtime), sandboxPresent(ctx, p))

	if p.KVM == nil {
		check("", errors.New("kvm not probed"))
	} else if kvmOK, why := p.KVM(ctx); kvmOK {
		good = append(good, "kvm works")
	} else {
		check("", fmt.Errorf("kvm unusable: %s", why))
	}

	if len(bad) > 0 {
		return false, strings.Join(bad, "; ")
	}
	return true, strings.Join(good, ", ")
}

// igniteVersion runs `ignite version -o short` and checks the release.
func igniteVersion(ctx context.Context, p Probe, path string) (string, error) {
	out, err := p.Run(ctx, path, versionArgs()...)
	if err != nil {
		return "", fmt.Errorf("ignite version: %w", err)
	}
	v := string(bytes.TrimSpace(out))
	if !sameMinor(v, SupportedVersion) {
		return v, fmt.Errorf("ignite at %s is %q; this engine needs %s (scripts/build-ignite.sh builds it)", path, v, SupportedVersion)
	}
	return v, nil
}

// sameMinor reports whether two versions vMAJOR.MINOR.PATCH share major
// and minor.
func sameMinor(a, b string) bool {
	minor := func(v string) string {
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 3 {
			return ""
		}
		return parts[0] + "." + parts[1]
	}
	ma := minor(a)
	return ma != "" && ma == minor(b)
}

// sandboxPresent checks that the runtime holds the sandbox image.
func sandboxPresent(ctx context.Context, p Probe) error {
	switch p.Runtime {
	case RuntimeDocker:
		docker, err := p.LookPath(p.DockerPath)
		if err != nil {
			return fmt.Errorf("no docker cli to look for the sandbox image: %w", err)
		}
		if _, err := p.Run(ctx, docker, dockerImageArgs(p.SandboxImage)...); err != nil {
			return fmt.Errorf("sandbox image %s not in docker (ignite would try to pull it): %w", p.SandboxImage, err)
		}
		return nil
	case RuntimeContainerd:
		named, err := reference.ParseNormalizedNamed(p.SandboxImage)
		if err != nil {
			return fmt.Errorf("sandbox image %q: %w", p.SandboxImage, err)
		}
		ref := reference.TagNameOnly(named).String()
		ctr, err := p.LookPath(p.CtrPath)
		if err != nil {
			return fmt.Errorf("no ctr cli to look for the sandbox image: %w", err)
		}
		out, err := p.Run(ctx, ctr, ctrImageArgs(ref)...)
		if err != nil {
			return fmt.Errorf("listing containerd images: %w", err)
		}
		for l := range strings.Lines(string(out)) {
			if strings.TrimSpace(l) == ref {
				return nil
			}
		}
		return fmt.Errorf("sandbox image %s not in containerd namespace %s (ignite would try to pull it)", ref, containerdNamespace)
	}
	return fmt.Errorf("runtime %q is not %q or %q", p.Runtime, RuntimeDocker, RuntimeContainerd)
}

// Select decides which engine to run from the FAAS_ENGINE setting: "qemu"
// always; "ignite" only when Available (else an error saying why); "auto"
// ignite when Available, else qemu. reason says why, for logs and
// /api/functions.
func Select(ctx context.Context, setting string, p Probe) (engine, reason string, err error) {
	switch setting {
	case EngineQEMU:
		return EngineQEMU, "FAAS_ENGINE=qemu", nil
	case EngineIgnite:
		ok, why := Available(ctx, p)
		if !ok {
			return "", "", fmt.Errorf("FAAS_ENGINE=ignite but ignite cannot run here: %s", why)
		}
		return EngineIgnite, "FAAS_ENGINE=ignite: " + why, nil
	case EngineAuto, "":
		ok, why := Available(ctx, p)
		if !ok {
			return EngineQEMU, "auto: ignite unusable: " + why, nil
		}
		return EngineIgnite, "auto: " + why, nil
	}
	return "", "", fmt.Errorf("engine %q is not %q, %q or %q", setting, EngineAuto, EngineQEMU, EngineIgnite)
}
