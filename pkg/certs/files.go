package certs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WritePair writes a certificate and its key (PEM), each with mode 0600,
// creating missing parent directories with mode 0700.
//
// Without overwrite, an existing file is an error that names it and wraps
// fs.ErrExist, and neither file is written. With overwrite, each file is
// replaced atomically (written beside it, then renamed over it), so that a
// Reloader never reads half a file; it reads the key written first and the
// certificate second, sees they differ for that moment, keeps the old pair
// and picks up the new one at its next check.
func WritePair(certFile, keyFile string, certPEM, keyPEM []byte, overwrite bool) error {
	if certFile == keyFile {
		return fmt.Errorf("certs: certificate and key are the same file %s", certFile)
	}
	if !overwrite {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Lstat(f); err == nil {
				return fmt.Errorf("certs: %s: %w", f, fs.ErrExist)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("certs: %w", err)
			}
		}
	}
	for _, f := range []string{certFile, keyFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
	}
	if err := writeFile(keyFile, keyPEM, overwrite); err != nil {
		return err
	}
	if err := writeFile(certFile, certPEM, overwrite); err != nil {
		if !overwrite {
			os.Remove(keyFile) // ours: created exclusively just now
		}
		return err
	}
	return nil
}

// writeFile writes data to a file with mode 0600: exclusively (failing if
// it exists), or by renaming a temporary file over it.
func writeFile(name string, data []byte, overwrite bool) error {
	if !overwrite {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		if err := finish(f, name, data); err != nil {
			os.Remove(name)
			return err
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := finish(f, name, data); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), name); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

// finish writes data to f, flushes it to disk and closes it; errors name
// the file the data is for.
func finish(f *os.File, name string, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", name, err)
	}
	return nil
}
