package appliance

import (
	"log/slog"
	"os"

	"github.com/faasvm/appliance/internal/config"
	"github.com/faasvm/appliance/internal/image"
)

// depsConfig is how functions' dependencies are installed. A CA bundle
// that does not exist (the default path on a host without one) is left
// out, saying so.
func depsConfig(cfg *config.Config, log *slog.Logger) image.DepsConfig {
	d := image.DepsConfig{PipIndexURL: cfg.PipIndexURL, NpmRegistry: cfg.NpmRegistry, Timeout: cfg.DepsTimeout}
	if b := cfg.BuildCABundle; b != "" && b != "none" {
		if _, err := os.Stat(b); err != nil {
			log.Warn("dependency installs trust only their image's CAs: the CA bundle is missing (FAAS_BUILD_CA_BUNDLE)", "path", b, "err", err)
		} else {
			d.CABundle = b
		}
	}
	return d
}
