package telemetry

import "github.com/warrenmq/warren/internal/configerr"

// ErrInvalidConfig matches every configuration error of warren.
var ErrInvalidConfig = configerr.ErrInvalidConfig

// ConfigError is an invalid Config.
type ConfigError = configerr.Error
