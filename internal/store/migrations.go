package store

import (
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// Migration is one versioned SQL file migrations/NNNN_name.sql of a SQL
// backend. Version N holds the same logical schema on every backend.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// LoadMigrations reads migrations/*.sql from fsys in version order and
// checks that versions start at 1 and have no gaps. backend names the
// backend in errors.
func LoadMigrations(fsys fs.FS, backend string) ([]Migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		if !ok {
			return nil, fmt.Errorf("%s: migration %s: name must be NNNN_name.sql", backend, name)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%s: migration %s: bad version", backend, name)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: base, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("%s: migration %s: expected version %d", backend, m.Name, i+1)
		}
	}
	return ms, nil
}

// MustLoadMigrations is LoadMigrations for embedded files, which are
// checked by the backends' tests: an error is a build defect.
func MustLoadMigrations(fsys fs.FS, backend string) []Migration {
	ms, err := LoadMigrations(fsys, backend)
	if err != nil {
		panic(err)
	}
	return ms
}
