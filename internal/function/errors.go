package function

import (
	"errors"
	"fmt"
)

// ErrInvalid is matched (errors.Is) by every error that says the folder is
// not a valid function: a bad name, manifest, VM config, handler, symlink or
// size. Other errors from Load (a folder that vanished, a read that failed)
// do not match it; errors.Is(err, fs.ErrNotExist) tells a deleted folder.
var ErrInvalid = errors.New("invalid function")

// invalidError is a validation failure. Its message is the user-facing
// explanation, without an "invalid function" prefix.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}
