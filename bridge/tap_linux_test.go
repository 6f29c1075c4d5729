package bridge

import (
	"errors"
	"os"
	"testing"
)

// A polling loop that stands in for a TAP device's loop just as that loop
// ends (its read failed and serveRaw returned, before ServeFramesOffload
// closes the busypoll.Loop) leaves it alone: the read's error stays the
// loop's to return, where a stand-in's own read would have cleared it and
// ServeFramesOffload returned nil, the "fn said stop" of FrameServer.
func TestTAPStandInLeavesAnEndingLoop(t *testing.T) {
	r, w, err := os.Pipe() // no frame to read: the stand-in's read finds none
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tap, err := newTAP(r, "pipe", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	bufs, sizes := make([][]byte, 4), make([]int, 4)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	served := 0
	tap.rbufs, tap.rsizes, tap.rserve = bufs, sizes, func(int) bool { served++; return true }
	failed := errors.New("the loop's read failed")
	tap.rerr = failed // as serveRaw leaves it when it returns
	var stood bool
	tap.rc.Control(func(fd uintptr) { stood = tap.standIn(fd) })
	if stood || tap.rerr != failed || served != 0 {
		t.Fatalf("the stand-in reported %v, served %d batches and left the loop's error %v; want false, none and %v", stood, served, tap.rerr, failed)
	}
}
