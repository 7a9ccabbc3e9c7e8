package qemu

import (
	"errors"

	"github.com/faasvm/appliance/internal/vm"
)

var _ vm.PSSReporter = (*machine)(nil)

// PSS is the proportional set size of the VM's QEMU process: guest RAM it
// touched (a clone's clean snapshot pages counted as shared), TCG's
// translation cache and QEMU's own heap.
func (m *machine) PSS() (int64, error) {
	select {
	case <-m.qemu.done:
		return 0, errors.New("reading PSS: the vm's QEMU process has exited")
	default:
	}
	return vm.ProcessPSS(m.qemu.pid)
}
