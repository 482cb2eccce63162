package cellwatch

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular is returned by ReadFile for a path that is not a regular
// file: a symbolic link, a FIFO, a device, a socket or a directory.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned by ReadFile for a file above its size limit.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads a file of the cells directory, at most max bytes. Only
// regular files are read: symbolic links are refused (even ones that point
// inside the directory, so that the directory can never serve a file from
// elsewhere), and so are FIFOs, devices and sockets, which could block a
// reader for ever or never end. The path is checked with Lstat, opened
// with O_NOFOLLOW|O_NONBLOCK (a FIFO swapped in after the check cannot
// block the open), checked again with Fstat on the open file, and read
// through a limit, so a file that grows after the size check is still
// bounded. A missing file gives an error wrapping fs.ErrNotExist.
func ReadFile(path string, max int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi, max); err != nil {
		return nil, err
	}
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: %w: a symbolic link (cells must be regular files in the directory)", path, ErrNotRegular)
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi, max); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w: grew past the limit of %d bytes while read", path, ErrTooLarge, max)
	}
	return b, nil
}

// regular checks that fi describes a regular file of at most max bytes.
func regular(path string, fi fs.FileInfo, max int64) error {
	m := fi.Mode()
	switch {
	case m&fs.ModeSymlink != 0:
		return fmt.Errorf("%s: %w: a symbolic link (cells must be regular files in the directory; symlinks are refused)", path, ErrNotRegular)
	case !m.IsRegular():
		return fmt.Errorf("%s: %w: a %s", path, ErrNotRegular, kind(m))
	case fi.Size() > max:
		return fmt.Errorf("%s: %w: %d bytes, the limit is %d", path, ErrTooLarge, fi.Size(), max)
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file (" + m.Type().String() + ")"
}
