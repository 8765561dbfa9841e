//go:build !linux

package bench

import (
	"io"
	"os"
	"os/exec"
	"time"
)

var terminateSignal = os.Interrupt

func readProcCPU(pid int) (time.Duration, error) { return 0, errNoProc }
func readProcRSS(pid int) (int64, error)         { return 0, errNoProc }
func setChildAttrs(cmd *exec.Cmd)                {}
func raiseFileLimit(p Params, log io.Writer)     {}
func selfCPU() time.Duration                     { return 0 }
func selfRSS() int64                             { return 0 }
func cpuModel() string                           { return "" }
func memTotalKB() int64                          { return 0 }
func loadAvg1() float64                          { return 0 }
