package wire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func goldenSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	paths, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.hex"))
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, parseHex(f, string(raw)))
	}
	return seeds
}

// FuzzDecode feeds arbitrary bytes to ReadFrame and ParseFrame: neither may
// panic or allocate past the cap, they must agree, and every frame they
// accept must re-encode to the same bytes.
func FuzzDecode(f *testing.F) {
	all := []byte{}
	for _, s := range goldenSeeds(f) {
		f.Add(s)
		all = append(all, s...)
	}
	f.Add(all)
	f.Add([]byte("SWBD\x01\x06\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff"))
	const maxSize = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 64)
		buf := make([]byte, 0, maxSize)
		rest := data
		for {
			fr, err := ReadFrame(br, maxSize, buf)
			pf, n, perr := ParseFrame(rest, maxSize)
			if err != nil {
				var de *DecodeError
				if errors.As(err, &de) {
					if !errors.As(perr, &de) {
						t.Fatalf("ReadFrame: %v, ParseFrame: %v", err, perr)
					}
				} else if perr == nil {
					t.Fatalf("ReadFrame: %v but ParseFrame decoded a frame", err)
				}
				return
			}
			if perr != nil {
				t.Fatalf("ParseFrame: %v but ReadFrame decoded a frame", perr)
			}
			if len(fr.Payload) > maxSize || pf.Header != fr.Header || !bytes.Equal(pf.Payload, fr.Payload) {
				t.Fatalf("decoders disagree")
			}
			enc := appendFrameVersion(nil, fr.Header.Version(), fr.Header.Type(), fr.Header.Flags(), fr.Header.StreamID(), fr.Payload)
			if !bytes.Equal(enc, rest[:n]) {
				t.Fatalf("re-encoding differs:\n%x\n%x", enc, rest[:n])
			}
			rest = rest[n:]
			// The payload parsers must cope with whatever arrived.
			switch fr.Header.Type() {
			case FrameHello:
				if h, err := ParseHello(fr.Payload); err == nil && !bytes.Equal(AppendHello(nil, &h), fr.Payload) {
					t.Fatal("HELLO does not round-trip")
				}
			case FrameHelloAck:
				ParseHelloAck(fr.Payload)
			case FrameWindowUpdate:
				ParseWindowUpdate(fr.Payload)
			case FrameReset, FrameError:
				ParseCodeReason(fr.Payload)
			case FrameGoAway:
				ParseGoAway(fr.Payload)
			}
		}
	})
}

// fuzzFrames turns fuzz input into frames with valid checksums so that the
// fuzzer gets past the CRC: each record is type, flags, stream id, length
// (one byte each) and the payload; a type of 0xff sends the rest raw.
func fuzzFrames(data []byte) []byte {
	var out []byte
	for len(data) >= 4 {
		t, fl, id, n := data[0], data[1], data[2], int(data[3])
		data = data[4:]
		if t == 0xff {
			return append(out, data...)
		}
		n = min(n, len(data))
		out = AppendFrame(out, FrameType(t%12), Flags(fl&3), uint32(id), data[:n])
		data = data[n:]
	}
	return out
}

func fuzzRecord(t FrameType, f Flags, id byte, p []byte) []byte {
	return append([]byte{byte(t), byte(f), id, byte(len(p))}, p...)
}

// FuzzSession drives a server session with arbitrary frames after a valid
// handshake: it must never panic, must answer within bounds and must end
// cleanly when the peer goes away.
func FuzzSession(f *testing.F) {
	var seq []byte
	seq = append(seq, fuzzRecord(FrameOpen, 0, 1, []byte("echo"))...)
	seq = append(seq, fuzzRecord(FrameData, FlagMore, 1, []byte("hel"))...)
	seq = append(seq, fuzzRecord(FrameData, 0, 1, []byte("lo"))...)
	seq = append(seq, fuzzRecord(FrameWindowUpdate, 0, 1, []byte{0, 0, 1, 0})...)
	seq = append(seq, fuzzRecord(FramePing, 0, 0, []byte("12345678"))...)
	seq = append(seq, fuzzRecord(FrameClose, 0, 1, nil)...)
	f.Add(seq)
	f.Add(append(fuzzRecord(FrameOpen, 0, 3, []byte("x")), fuzzRecord(FrameReset, 0, 3, []byte{0, 0, 0, 7})...))
	f.Add(append(fuzzRecord(FrameOpen, 0, 1, []byte("x")), fuzzRecord(FrameData, FlagCompressed, 1, []byte("zz"))...))
	f.Add(fuzzRecord(FrameGoAway, 0, 0, []byte{0, 0, 0, 0, 0, 0, 0, 0}))
	f.Add([]byte{0xff, 'S', 'W', 'B', 'D', 1, 6, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	for _, s := range goldenSeeds(f) {
		f.Add(append([]byte{0xff}, s...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("slow input: %v", d)
			}
		}()
		// Odd-length inputs run over loopback TCP, where the session reads
		// with readv and straight into parked Reads; even ones over a pipe.
		var c, sc net.Conn
		if len(data)%2 == 1 {
			c, sc = tcpPair(t)
		} else {
			c, sc = net.Pipe()
		}
		defer c.Close()
		ready := make(chan *Session, 1)
		go func() {
			s, _ := Server(sc, Config{
				WindowSize:        MinWindow,
				MaxFrameSize:      MinMaxFrameSize,
				MaxStreams:        8,
				AcceptBacklog:     2,
				MaxMessageSize:    2048,
				KeepAliveInterval: -1,
				Compression:       []Compression{CompressionS2},
			})
			ready <- s
		}()
		// Drain everything the session says so it never blocks on us.
		go io.Copy(io.Discard, c) //nolint:errcheck // ends when c closes
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		hello := AppendFrame(nil, FrameHello, 0, 0, AppendHello(nil, &Hello{MinVersion: 1, MaxVersion: 1, MaxFrameSize: MinMaxFrameSize, InitialWindow: MinWindow, Features: FeatureS2}))
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		s := <-ready
		if s == nil {
			t.Fatal("handshake failed")
		}
		defer s.Close()
		go func() {
			for {
				st, err := s.Accept(context.Background())
				if err != nil {
					return
				}
				go func() {
					defer st.Close()
					st.SetDeadline(time.Now().Add(2 * time.Second))
					switch st.ID() % 8 {
					case 1:
						io.Copy(st, st) //nolint:errcheck // any outcome is fine
					case 5:
						// Plain Reads of odd sizes, echoed back.
						buf := make([]byte, 1+int(st.ID())*37%3000)
						for {
							n, err := st.Read(buf)
							if n > 0 {
								if _, err := st.Write(buf[:n]); err != nil {
									return
								}
							}
							if err != nil {
								return
							}
						}
					default:
						var buf []byte
						for {
							var err error
							if buf, err = st.ReadMessage(buf[:0]); err != nil && !errors.Is(err, ErrMessageTooLarge) {
								return
							}
						}
					}
				}()
			}
		}()
		c.Write(fuzzFrames(data)) //nolint:errcheck // the session may hang up first
		c.Close()
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end after the peer hung up")
		}
	})
}
