package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/firewall"
	"github.com/faasvm/appliance/internal/vm"
	"github.com/faasvm/appliance/internal/vm/ignite"
	"github.com/faasvm/appliance/internal/vm/qemu"
)

// chooseEngine applies FAAS_ENGINE: ignite only when its binary, the
// Firecracker sandbox image and a KVM that really runs a guest are present
// (auto), qemu otherwise. It returns the engine and why it was chosen.
func chooseEngine(ctx context.Context, cfg *config.Config, kernel, initrd string, log *slog.Logger) (vm.Engine, string, error) {
	qcfg := qemu.Config{
		QEMUPath: cfg.QEMUBin, Accel: cfg.Accel, StateDir: cfg.StateDir,
		KeepLogsDir: filepath.Join(cfg.StateDir, "logs"), Logger: log,
		UIDBase: cfg.VMUIDBase, UIDCount: cfg.VMUIDCount,
		ConsoleMaxSize: int64(cfg.ConsoleMaxSize),
	}
	if cfg.VMUIDBase == 0 {
		qcfg.UIDBase = -1 // QEMU runs as the appliance
	}
	fw, err := vmFirewall(cfg, qcfg, log)
	if err != nil {
		return nil, "", err
	}
	qcfg.Firewall = fw
	qe, err := qemu.New(qcfg)
	if err != nil {
		return nil, "", err
	}
	if err := qe.Cleanup(ctx); err != nil {
		log.Warn("cleaning up VMs of an earlier run", "err", err)
	}
	// The qemu engine's probe boot is also how ignite's KVM need is checked.
	accel, accelWhy, err := qe.DetectAccel(ctx, kernel, initrd)
	if err != nil {
		return nil, "", fmt.Errorf("choosing the accelerator: %w", err)
	}
	name, why, err := ignite.Select(ctx, cfg.Engine, ignite.Probe{
		KVM: func(context.Context) (bool, string) { return accel == qemu.AccelKVM, accelWhy },
	})
	if err != nil {
		return nil, "", err
	}
	if name != ignite.EngineIgnite {
		note := fmt.Sprintf("qemu (%s), accel %s: %s", why, accel, accelWhy)
		log.Info("engine chosen", "engine", "qemu", "accel", accel, "reason", why, "accel_reason", accelWhy)
		return qe, note, nil
	}
	ie, err := ignite.New(ignite.Config{
		AgentPath: cfg.AgentBin, StateDir: cfg.StateDir,
		KeepLogsDir: filepath.Join(cfg.StateDir, "logs"), Logger: log,
	})
	if err != nil {
		return nil, "", err
	}
	if _, err := ie.Cleanup(ctx); err != nil {
		log.Warn("cleaning up ignite VMs of an earlier run", "err", err)
	}
	log.Info("engine chosen", "engine", "ignite", "reason", why)
	return ie, "ignite: " + why, nil
}

// vmFirewall builds the firewall that keeps the VM uids' connections off
// the appliance (nil when QEMU does not run as VM users: then no uid tells
// a VM's connections from the appliance's, and egress is refused). It is
// installed at each boot; without NET_ADMIN or nft that fails, which only
// VMs with egress refuse to boot over.
func vmFirewall(cfg *config.Config, q qemu.Config, log *slog.Logger) (*firewall.Firewall, error) {
	iso, egr, ok := q.UIDPools()
	if !ok {
		return nil, nil
	}
	deny, err := firewall.ParsePrefixes(cfg.EgressDeny)
	if err != nil {
		return nil, fmt.Errorf("egress_deny: %w", err)
	}
	return firewall.New(firewall.Config{
		Isolated: firewall.Range{First: iso.First, Last: iso.Last},
		Egress:   firewall.Range{First: egr.First, Last: egr.Last},
		Deny:     deny,
		Logger:   log,
	})
}
