package receive

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestCountdown(t *testing.T) {
	t.Run("completions before seal", func(t *testing.T) {
		var c countdown
		c.arm()
		for i := 0; i < 3; i++ {
			if c.done() {
				t.Fatalf("completion %d reached zero before the seal", i)
			}
		}
		if c.zero() {
			t.Fatal("zero while armed")
		}
		if !c.seal(3) || !c.zero() {
			t.Fatal("seal after all 3 completions did not reach zero")
		}
	})
	t.Run("completions after seal", func(t *testing.T) {
		var c countdown
		c.arm()
		if c.done() || c.seal(2) {
			t.Fatal("zero with one of two completions to come")
		}
		if !c.done() || !c.zero() {
			t.Fatal("the last completion did not reach zero")
		}
	})
	t.Run("add then seal nothing", func(t *testing.T) {
		var c countdown
		c.arm()
		c.add(1)
		c.add(1)
		if c.done() || c.seal(0) {
			t.Fatal("zero with one added completion to come")
		}
		if !c.done() {
			t.Fatal("the last added completion did not reach zero")
		}
	})
	t.Run("empty", func(t *testing.T) {
		var c countdown
		c.arm()
		if !c.seal(0) {
			t.Fatal("sealing an empty count did not reach zero")
		}
	})
	// Concurrent completions racing the seal: exactly one call sees zero, every time.
	t.Run("race", func(t *testing.T) {
		for round := 0; round < 200; round++ {
			var c countdown
			var zeros atomic.Int32
			c.arm()
			const n = 64
			var wg sync.WaitGroup
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if c.done() {
						zeros.Add(1)
					}
				}()
			}
			if c.seal(n) {
				zeros.Add(1)
			}
			wg.Wait()
			if zeros.Load() != 1 || !c.zero() {
				t.Fatalf("round %d: %d calls saw zero, want exactly 1", round, zeros.Load())
			}
		}
	})
}
