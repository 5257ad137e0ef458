// Command gotuf drives go-tuf v0.5.2, the TUF library inside Fleet's Orbit agent and fleetctl, for
// orbit-packager's tests.
//
//	gotuf client URL TRUSTED_ROOT_FILE
//	    Orbit's update check: a fresh client.NewClient(local store, HTTPRemoteStore(URL)),
//	    Init(trusted root) then Update(), then Download of every target listed. Prints one JSON
//	    object: the trusted metadata versions and every target's path, length and the sha512 of
//	    the bytes downloaded. Any failure prints "gotuf: ..." on stderr and exits 1.
//
//	gotuf resign REPO_DIR [-roles root,targets,snapshot,timestamp] [-expires 720h]
//	    fleetctl's repository side: tuf.NewRepo(tuf.FileSystemStore(REPO_DIR, passphrases from
//	    FLEET_<ROLE>_PASSPHRASE)) re-signs the roles named (each version bumped, expiring after
//	    -expires) and commits. go-tuf writes expires in the local time zone: run it with e.g.
//	    TZ=America/Sao_Paulo to get "-03:00" offsets, as fleetctl does on such a machine.
package main

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // zone data built in: TZ=America/Sao_Paulo works without the tzdata package

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	tuf "github.com/theupdateframework/go-tuf"
	"github.com/theupdateframework/go-tuf/client"
	"github.com/theupdateframework/go-tuf/data"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: gotuf client URL ROOT | gotuf resign DIR [-roles R,..] [-expires D]"))
	}
	var err error
	switch os.Args[1] {
	case "client":
		err = runClient(os.Args[2:])
	case "resign":
		err = runResign(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "gotuf: %v\n", err)
	os.Exit(1)
}

// buffer is a client.Destination kept in memory.
type buffer struct{ bytes.Buffer }

func (b *buffer) Delete() error { b.Reset(); return nil }

type targetOut struct {
	Length int64  `json:"length"`
	SHA512 string `json:"sha512"`
}

type clientOut struct {
	Versions map[string]int64     `json:"versions"`
	Expires  map[string]string    `json:"expires"`
	Targets  map[string]targetOut `json:"targets"`
}

func runClient(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: gotuf client URL TRUSTED_ROOT_FILE")
	}
	root, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	// As Orbit: an HTTP remote store under the update URL (targets under /targets).
	remote, err := client.HTTPRemoteStore(args[0], nil, &http.Client{Timeout: 60 * time.Second})
	if err != nil {
		return err
	}
	local := client.MemoryLocalStore()
	c := client.NewClient(local, remote)
	if err := c.Init(root); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if _, err := c.Update(); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	targets, err := c.Targets()
	if err != nil {
		return fmt.Errorf("targets: %w", err)
	}
	out := clientOut{Versions: map[string]int64{}, Expires: map[string]string{}, Targets: map[string]targetOut{}}
	names := make([]string, 0, len(targets))
	for name := range targets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		var dest buffer
		if err := c.Download(name, &dest); err != nil {
			return fmt.Errorf("download %s: %w", name, err)
		}
		sum := sha512.Sum512(dest.Bytes())
		out.Targets[name] = targetOut{Length: int64(dest.Len()), SHA512: hex.EncodeToString(sum[:])}
	}
	meta, err := local.GetMeta()
	if err != nil {
		return err
	}
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		var signed struct {
			Signed struct {
				Version int64  `json:"version"`
				Expires string `json:"expires"`
			} `json:"signed"`
		}
		if err := json.Unmarshal(meta[role+".json"], &signed); err != nil {
			return fmt.Errorf("trusted %s.json: %w", role, err)
		}
		out.Versions[role] = signed.Signed.Version
		out.Expires[role] = signed.Signed.Expires
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func passphrase(role string, confirm, change bool) ([]byte, error) {
	name := "FLEET_" + strings.ToUpper(role) + "_PASSPHRASE"
	value, ok := os.LookupEnv(name)
	if !ok {
		return nil, fmt.Errorf("%s is not set", name)
	}
	return []byte(value), nil
}

func runResign(args []string) error {
	if len(args) < 1 {
		return errors.New("usage: gotuf resign DIR [-roles R,..] [-expires D]")
	}
	dir := args[0]
	flags := flag.NewFlagSet("resign", flag.ContinueOnError)
	rolesFlag := flags.String("roles", "root,targets,snapshot,timestamp", "roles to re-sign")
	expiresFlag := flags.Duration("expires", 30*24*time.Hour, "time until the new expiry")
	if err := flags.Parse(args[1:]); err != nil {
		return err
	}
	roles := map[string]bool{}
	for _, r := range strings.Split(*rolesFlag, ",") {
		roles[strings.TrimSpace(r)] = true
	}
	expires := time.Now().Add(*expiresFlag) // local time zone, as fleetctl passes it
	store := tuf.FileSystemStore(dir, passphrase)

	if roles["root"] {
		// go-tuf has no call that only re-signs root (fleetctl re-signs it through key changes):
		// bump it and sign it with the root keys through the repository, as setMeta does.
		repo, err := tuf.NewRepo(store)
		if err != nil {
			return err
		}
		signed, err := repo.SignedMeta("root.json")
		if err != nil {
			return err
		}
		var root data.Root
		if err := json.Unmarshal(signed.Signed, &root); err != nil {
			return err
		}
		root.Version++
		root.Expires = expires.Round(time.Second)
		body, err := cjson.EncodeCanonical(&root)
		if err != nil {
			return err
		}
		payload := &data.Signed{Signed: body, Signatures: []data.Signature{}}
		if _, err := repo.SignPayload("root", payload); err != nil {
			return fmt.Errorf("sign root: %w", err)
		}
		raw, err := json.Marshal(payload)
		if err != nil {
			return err
		}
		if err := store.SetMeta("root.json", raw); err != nil {
			return err
		}
	}
	// A new Repo reads the staged root.
	repo, err := tuf.NewRepo(store)
	if err != nil {
		return err
	}
	// Re-signing a role changes its hash: the roles that list it are re-signed with it.
	if roles["targets"] {
		if err := repo.AddTargetsWithExpires(nil, nil, expires); err != nil {
			return fmt.Errorf("targets: %w", err)
		}
		roles["snapshot"] = true
	}
	if roles["snapshot"] {
		if err := repo.SnapshotWithExpires(expires); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		roles["timestamp"] = true
	}
	if roles["timestamp"] {
		if err := repo.TimestampWithExpires(expires); err != nil {
			return fmt.Errorf("timestamp: %w", err)
		}
	}
	if err := repo.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
