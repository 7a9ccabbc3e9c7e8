package export

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"
)

// registryAuth is the X-Registry-Auth value for pushing ref: the
// credentials `docker login` stored for its registry in the Docker client
// config ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), or none.
// Credential helpers (credsStore) are not consulted: push with docker push
// then, or store the credentials in the file.
func registryAuth(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", ref, err)
	}
	host := reference.Domain(named)
	cfg, err := readDockerConfig()
	if err != nil {
		return "", err
	}
	keys := []string{host, "https://" + host, "http://" + host}
	if host == "docker.io" {
		keys = append(keys, "https://index.docker.io/v1/", "index.docker.io")
	}
	ac := registry.AuthConfig{ServerAddress: host}
	for _, k := range keys {
		e, ok := cfg.Auths[k]
		if !ok || e.Auth == "" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			return "", fmt.Errorf("docker config: credentials for %s are not base64", k)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return "", fmt.Errorf("docker config: credentials for %s are not user:password", k)
		}
		ac.Username, ac.Password = user, pass
		break
	}
	return registry.EncodeAuthConfig(ac)
}

type dockerConfig struct {
	Auths map[string]struct {
		Auth string `json:"auth"`
	} `json:"auths"`
}

func readDockerConfig() (dockerConfig, error) {
	var cfg dockerConfig
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return cfg, nil // no home: no stored credentials
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("reading docker config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("docker config %s: %w", path, err)
	}
	return cfg, nil
}
