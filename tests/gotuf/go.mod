// Orbit's own TUF client (go-tuf v0.5.2) for the test suite, built from Debian's packaged
// sources only (scripts/install-gotuf.sh): GOPROXY=off GOFLAGS=-mod=mod go build.
module orbit-packager/tests/gotuf

go 1.19

require (
	github.com/secure-systems-lab/go-securesystemslib v0.4.0
	github.com/theupdateframework/go-tuf v0.5.2
	golang.org/x/crypto v0.0.0-20211117183948-ae814b36b871
)

replace (
	github.com/secure-systems-lab/go-securesystemslib => /usr/share/gocode/src/github.com/secure-systems-lab/go-securesystemslib
	github.com/theupdateframework/go-tuf => /usr/share/gocode/src/github.com/theupdateframework/go-tuf
	golang.org/x/crypto => /usr/share/gocode/src/golang.org/x/crypto
)
