package source

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/nxadm/tail"
	"github.com/nxadm/tail/watch"
)

// tailer follows one open file with github.com/nxadm/tail.
//
// It hands the library the path /proc/self/fd/N of a descriptor we hold, never
// the configured path: every open the library makes (its first, and its reopen
// after a truncation) then reaches the same inode, so every offset it reports
// is an offset in the file we think it reads. Rotation is ours to notice; the
// library only reads one inode and says when it grows or shrinks.
//
// The configuration avoids the library's calls to os.Exit: ReOpen is off
// (ReOpen without Follow exits), the file exists and is open before the
// library stats it, and inotify was checked by canUseInotify.
type tailer struct {
	t    *tail.Tail
	name string // what the library was given to follow
	poll bool
}

func startTailer(f *os.File, offset int64, poll bool) (*tailer, error) {
	name := "/proc/self/fd/" + strconv.FormatUint(uint64(f.Fd()), 10)
	t, err := tail.TailFile(name, tail.Config{
		Location:      &tail.SeekInfo{Offset: offset, Whence: io.SeekStart},
		Follow:        true,
		ReOpen:        false,
		MustExist:     true,
		Poll:          poll,
		CompleteLines: true,
		Logger:        tail.DiscardingLogger,
	})
	if err != nil {
		return nil, fmt.Errorf("start tail of %s: %w", name, err)
	}
	return &tailer{t: t, name: name, poll: poll}, nil
}

// lines delivers the lines read; it is closed when the library stops, after
// stop or on its own (the file was renamed, or an error: see wait).
func (tl *tailer) lines() <-chan *tail.Line { return tl.t.Lines }

// stop ends the library's reading goroutine and waits for it. In inotify
// mode it also waits (boundedly) until the library's watcher goroutine has
// taken the name out of the process-wide table, which it does on its own
// after the reader stopped: a follower started under the same name before
// that (the same descriptor, or its number reused) would share the entry
// being removed and hear nothing.
func (tl *tailer) stop() error {
	err := tl.t.Stop()
	if !tl.poll {
		start := time.Now()
		for watch.Events(tl.name) != nil {
			waited := time.Since(start)
			switch {
			case waited >= tableRemovalWait:
				return err
			case waited < tableRemovalSpin:
				runtime.Gosched()
			default:
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	return err
}

// tableRemovalWait bounds stop's wait for the library's table; the stream's
// watchdog covers a follower that starts deaf all the same. The removal
// takes a few goroutine hops, tens of microseconds; stop yields rather than
// sleeps for the first tableRemovalSpin, since a sleep this short lasts a
// millisecond or more (the runtime's timers wait in whole milliseconds when
// nothing else runs), which a restart of a follower would add to the wait
// of the lines it is restarted for.
const (
	tableRemovalWait = time.Second
	tableRemovalSpin = 500 * time.Microsecond
)

// watching reports whether the library has added its inotify watch, which
// it does only when it first reads to the end of the file (in
// watch.InotifyFileWatcher.ChangeEvents): from then on every write wakes it.
// The library's table gets the name's entry before, and under the same lock
// as, inotify_add_watch, so an entry seen means the watch is in place. A
// poller misses no growth (its stat loop compares sizes), so it is always
// watching.
func (tl *tailer) watching() bool {
	return tl.poll || watch.Events(tl.name) != nil
}

// wait returns why the library stopped, once lines is closed; nil when it
// stopped because the file was renamed or removed.
func (tl *tailer) wait() error { return tl.t.Wait() }

// canUseInotify reports whether an inotify instance can be created. The
// library's shared watcher calls os.Exit when it cannot create one, so a
// source falls back to polling when this fails.
//
// It then makes sure the library's table exists (adding and removing a watch
// of "/", a name no follower uses), so that tailer.stop can look into it.
func canUseInotify() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("create inotify watcher: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("close inotify watcher: %w", err)
	}
	if err := watch.Watch("/"); err != nil {
		return fmt.Errorf("watch /: %w", err)
	}
	if err := watch.RemoveWatch("/"); err != nil {
		return fmt.Errorf("stop watching /: %w", err)
	}
	return nil
}

// checkProcFD verifies that /proc/self/fd is there, which tailer relies on.
func checkProcFD() error {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return fmt.Errorf("find open files in /proc (is it mounted?): %w", err)
	}
	return nil
}
