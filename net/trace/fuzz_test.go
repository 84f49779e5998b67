package trace

import (
	"encoding/hex"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// FuzzDecodeTrace: no input makes the decoder (or printing what it decoded) panic.
func FuzzDecodeTrace(f *testing.F) {
	for _, s := range []string{capturedDNAT, capturedForward} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Add([]byte{2, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 8, 0, 5, 0x80, 4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := DecodeTrace(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(subsysNFTables<<8 | unix.NFT_MSG_TRACE)}, Data: data})
		if err != nil {
			return
		}
		if tr.Table == "" || tr.Chain == "" {
			t.Fatalf("decoded a trace without table or chain: %+v", tr)
		}
		_ = Event{Netns: "x", Trace: tr}.String()
		_ = tr.Packet.String()
	})
}
