package config

import "path/filepath"

// UploadConfig holds the settings of the upload API (PUT/POST/DELETE
// /api/functions).
type UploadConfig struct {
	// UploadsDir holds the uploaded functions; "" is <state_dir>/uploads.
	UploadsDir string
	// Uploads is "auto" (on when APIToken is set), "on" (also without a
	// token: anyone who reaches the port may run code) or "off".
	Uploads string
}

// UploadsDirOrDefault is UploadsDir, or <state_dir>/uploads when unset.
func (c *Config) UploadsDirOrDefault() string {
	if c.UploadsDir != "" {
		return c.UploadsDir
	}
	return filepath.Join(c.StateDir, "uploads")
}

// UploadsEnabled resolves Uploads: "auto" turns uploads on only with an
// API token, since an upload runs code.
func (c *Config) UploadsEnabled() bool {
	switch c.Uploads {
	case "on":
		return true
	case "off":
		return false
	}
	return c.APIToken != ""
}

// uploadSettings are the rows of the upload API's settings.
func uploadSettings() []setting {
	return []setting{
		{key: "uploads_dir", def: "", typ: "string",
			help:  "folder of uploaded functions, appliance-owned, in the state volume (empty: <state_dir>/uploads)",
			field: func(c *Config) any { return &c.UploadsDir }},
		{key: "uploads", def: "auto", typ: "string", choices: []string{"auto", "on", "off"},
			help:  "upload API: auto (on only when api_token is set), on (also without a token: anyone reaching the port runs code) or off",
			field: func(c *Config) any { return &c.Uploads }},
	}
}
