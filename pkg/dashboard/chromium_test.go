package dashboard

import (
	"context"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/service/servicetest"
)

// chromium runs headless Chromium with args against url and returns its
// standard output. The virtual time budget lets the page poll its API a
// few times (each poll waits for the real response) before the capture.
func chromium(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--disable-extensions", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=9000",
	}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

func TestPageInChromium(t *testing.T) {
	bin := servicetest.Tool(t, "chromium")
	mux := http.NewServeMux()
	Register(mux, &fakeSource{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	url := srv.URL + Path

	t.Run("rendered DOM", func(t *testing.T) {
		dom := chromium(t, bin, url, "--dump-dom")
		for _, want := range []string{
			`data-service="demo"`, `data-instance="demo-1"`, `data-instance="demo-3"`,
			`2 of 3 passing`, `class="pill critical"`, // health
			`50%`,                                    // traffic share
			`<path d="M`, `data-probe="ping-demo-1"`, // the RTT chart has lines
			`live · updated`, // the poller reached the API
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("rendered page lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("DOM:\n%s", dom)
		}
	})

	t.Run("screenshot", func(t *testing.T) {
		shot := filepath.Join(t.TempDir(), "dashboard.png")
		if dst := os.Getenv("DASHBOARD_SCREENSHOT"); dst != "" {
			shot = dst // keep it for a person to look at
		}
		chromium(t, bin, url, "--screenshot="+shot, "--window-size=1280,860")
		f, err := os.Open(shot)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 860 {
			t.Errorf("screenshot is %v, want 1280x860", b)
		}
		// What a person sees: green health pills, blue share bars and the
		// first probe's blue line, the second probe's pink line.
		for _, c := range []struct {
			name    string
			r, g, b uint8
			min     int
		}{
			{"passing pill", 0x16, 0xa3, 0x4a, 200},
			{"critical pill", 0xdc, 0x26, 0x26, 100},
			{"share bars and first RTT line", 0x25, 0x63, 0xeb, 300},
			{"second RTT line", 0xdb, 0x27, 0x77, 50},
		} {
			if n := countNear(img, c.r, c.g, c.b); n < c.min {
				t.Errorf("%s: %d pixels of #%02x%02x%02x, want at least %d", c.name, n, c.r, c.g, c.b, c.min)
			}
		}
	})
}

// countNear counts pixels within a small distance of one colour.
func countNear(img image.Image, r, g, b uint8) int {
	n := 0
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr>>8, r) && near(pg>>8, g) && near(pb>>8, b) {
				n++
			}
		}
	}
	return n
}

func near(v uint32, want uint8) bool {
	d := int(v) - int(want)
	return d >= -10 && d <= 10
}
