// Package tcpproxy is a TCP forwarder for tests that need a dependency to
// fail and come back (a database outage, a partition) without stopping the
// real server, which other tests may be using.
package tcpproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Mode is what the proxy does with connections.
type Mode int

const (
	Forward   Mode = iota // pass bytes both ways
	Refuse                // close every connection at once (server down, port closed)
	Blackhole             // accept and never answer (packets dropped, host gone)
)

// Proxy is a TCP forwarder between the store and PostgreSQL that a test can
// cut and heal, like a network partition. The listener stays open in every
// mode so the address never changes; Refuse closes accepted connections
// immediately, which the client sees the same way as a dead server.
type Proxy struct {
	ln     net.Listener
	target string
	// muted drops the client's bytes on their way to the target while
	// connections stay up (see Mute).
	muted atomic.Bool

	mu    sync.Mutex
	mode  Mode
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.acceptLoop)
	t.Cleanup(func() {
		_ = ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return p
}

func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set switches mode and drops every open connection: entering an outage
// breaks the connections that crossed it (as a partition would), and
// healing one breaks the connections the black hole was holding, which
// would otherwise hang until the client's connect timeout.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
	p.closeAll()
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// track registers c so closeAll reaches it; false if the mode changed to
// one that must not carry it.
func (p *Proxy) track(c net.Conn, want Mode) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode != want {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed at cleanup
		}
		p.mu.Lock()
		m := p.mode
		p.mu.Unlock()
		switch m {
		case Refuse:
			_ = c.Close()
		case Blackhole:
			if !p.track(c, Blackhole) {
				_ = c.Close()
			}
		case Forward:
			p.wg.Go(func() { p.pipe(c) })
		}
	}
}

func (p *Proxy) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, Forward) || !p.track(up, Forward) {
		_ = c.Close()
		_ = up.Close()
		return
	}
	var wg sync.WaitGroup
	// Either direction ending (EOF or a close by closeAll) ends both.
	for _, dir := range [][2]io.ReadWriteCloser{{up, c}, {c, up}} {
		wg.Go(func() {
			src := io.Reader(dir[1])
			if dir[0] == up {
				src = mutable{r: dir[1], muted: &p.muted}
			}
			_, _ = io.Copy(dir[0], src)
			_ = dir[0].Close()
			_ = dir[1].Close()
		})
	}
	wg.Wait()
}

// Mute makes every connection half-open: what the target sends still
// reaches the client, what the client sends is read and dropped, and no
// connection closes, so the client cannot tell (a broken NIC queue, a
// one-way partition, a server that shut its routes but not its clients).
// Unmute passes the client's bytes again; what was dropped stays lost.
func (p *Proxy) Mute()   { p.muted.Store(true) }
func (p *Proxy) Unmute() { p.muted.Store(false) }

// mutable reads from r and, while muted is set, swallows what it read.
type mutable struct {
	r     io.Reader
	muted *atomic.Bool
}

func (m mutable) Read(b []byte) (int, error) {
	for {
		n, err := m.r.Read(b)
		if n == 0 || !m.muted.Load() {
			return n, err
		}
		if err != nil {
			return 0, err
		}
	}
}

// Cut makes the target look down: open connections break, new ones are
// closed at once.
func (p *Proxy) Cut() { p.Set(Refuse) }

// Heal forwards again.
func (p *Proxy) Heal() { p.Set(Forward) }
