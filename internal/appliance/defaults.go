package appliance

import (
	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/function"
	"github.com/faasvm/appliance/internal/image"
)

// FunctionDefaults are the settings a function gets from the appliance's
// configuration when its function.yaml leaves them out, and the operator's
// policy it is checked against. The controller and `faasvm export` both use
// them, so a folder means the same thing to both. SnapshotDir is the
// caller's to set.
func FunctionDefaults(cfg *config.Config) function.Defaults {
	return function.Defaults{
		Timeout: cfg.InvokeTimeout, Memory: defaultMemory(cfg.DefaultMemory), CPUs: cfg.DefaultCPUs, Egress: cfg.Egress,
		MinReplicas: cfg.MinReplicas, MaxReplicas: cfg.MaxReplicas, Concurrency: cfg.Concurrency,
		IdleTimeout: cfg.IdleTimeout, TargetUtilization: cfg.TargetUtilization, MaxSize: image.DefaultCodeSizeLimit,
		Policy: policy(cfg),
	}
}
