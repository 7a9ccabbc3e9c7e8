package gateway

import "github.com/labstack/echo/v4"

// functionPrefix is OpenFaaS's invocation path, /function/<name>[/<path>].
//
// Of OpenFaaS's gateway routes the appliance offers:
//   - /function/<name>[/<path>]: exactly /invoke/<name>[/<path>] (every
//     method and path goes to the function, nothing reaches the agent's
//     control port), so `faas-cli invoke` and existing clients work;
//   - /async-function/<name>[/<path>] with X-Callback-Url (internal/async);
//   - /healthz.
//
// It does not offer /system/* (functions, scale-function, secrets,
// namespaces, logs, info) nor /metrics in OpenFaaS's format: functions are
// deployed from folders, and /api/* is the management API.
const functionPrefix = "/function/"

// invokeOpenFaaS serves /function/<name>[/<path>] as invoke serves
// /invoke/<name>[/<path>]: same isolation, limits, errors and request ids.
func (g *Gateway) invokeOpenFaaS(c echo.Context) error {
	return g.invoke(c)
}
