package latest

import (
	"slices"
	"sync"
	"testing"
)

func TestChan(t *testing.T) {
	for _, tc := range []struct {
		name string
		sets []int
		want []int // what a reader then gets, in order, before the channel blocks or ends
		end  bool  // Close after the sets
	}{
		{"nothing", nil, nil, false},
		{"one", []int{1}, []int{1}, false},
		{"only the newest waits", []int{1, 2, 3}, []int{3}, false},
		{"close keeps the undelivered value", []int{1, 2}, []int{2}, true},
		{"closed empty", nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New[int]()
			for _, v := range tc.sets {
				c.Set(v)
			}
			if tc.end {
				c.Close()
				c.Set(99) // ignored
				c.Close() // twice is fine
			}
			var got []int
		read:
			for {
				select {
				case v, ok := <-c.Updates():
					if !ok {
						if !tc.end {
							t.Fatal("closed without Close")
						}
						break read
					}
					got = append(got, v)
				default:
					if tc.end {
						t.Fatal("closed channel blocked")
					}
					break read
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestConcurrent: writers never block, the reader ends with the last value
// set, and Close while writers run is safe (run with -race).
func TestConcurrent(t *testing.T) {
	c := New[int]()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				c.Set(w*1000 + i)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range c.Updates() {
		}
	}()
	wg.Wait()
	c.Set(-1)
	c.Close()
	<-done
}

func TestLastValueWins(t *testing.T) {
	c := New[string]()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Set("old")
			}
		}()
	}
	wg.Wait()
	c.Set("new")
	if v := <-c.Updates(); v != "new" {
		t.Fatalf("read %q after every Set returned, want the last one", v)
	}
}
