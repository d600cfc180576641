package wire

import (
	"crypto/sha256"
	"encoding/binary"
)

// Limits of the signed self-claims and certificate carriage (PROTOCOL.md 10.10).
const (
	// MaxSig bounds a signature field: an RSA-4096 signature is 512 bytes; ECDSA
	// P-256 (ASN.1) at most 72, Ed25519 64.
	MaxSig = 512
	// MaxCerts bounds the certificate chains of one PushPull, MaxCertChain one
	// chain (leaf and intermediates, DER) and MaxCertBytes all of them: the missing
	// ones of a larger cluster arrive over the next exchanges.
	MaxCerts     = 64
	MaxCertChain = 8 << 10
	MaxCertBytes = 128 << 10
	// MaxCertHave bounds PushPull's CertHave, one hash per member at most.
	MaxCertHave = MaxNodeStates
)

// Domain separation of the signed claims: a signature over one kind of claim can
// never be read as another, nor as anything else the same key signs (TLS
// handshakes sign with their own context string).
const (
	aliveClaimContext = "omnirelay-mesh v1 alive\x00"
	leaveClaimContext = "omnirelay-mesh v1 leave\x00"
)

// AliveClaim is the byte string a member signs to say it is alive at addr with
// incarnation inc, speaking versions pmin..pmax and advertising features feat,
// in the cluster of label (PROTOCOL.md 10.10): the context string, then label,
// name and addr each as a 2-byte big-endian length and its bytes, then inc as 8
// bytes big-endian, pmin and pmax one byte each, feat as 8 bytes big-endian
// (signed, so another key holder cannot switch a member's features on or off). Strings longer than MaxString never reach it (they
// are refused at decoding).
func AliveClaim(label, name, addr string, inc uint64, pmin, pmax uint8, feat Features) []byte {
	b := make([]byte, 0, len(aliveClaimContext)+6+len(label)+len(name)+len(addr)+18)
	b = append(b, aliveClaimContext...)
	b = appendClaimStr(appendClaimStr(appendClaimStr(b, label), name), addr)
	b = binary.BigEndian.AppendUint64(b, inc)
	return binary.BigEndian.AppendUint64(append(b, pmin, pmax), uint64(feat))
}

// LeaveClaim is the byte string a member signs to say it left at incarnation inc:
// the context string, label and name as in AliveClaim, inc as 8 bytes big-endian.
func LeaveClaim(label, name string, inc uint64) []byte {
	b := make([]byte, 0, len(leaveClaimContext)+4+len(label)+len(name)+8)
	b = append(b, leaveClaimContext...)
	b = appendClaimStr(appendClaimStr(b, label), name)
	return binary.BigEndian.AppendUint64(b, inc)
}

func appendClaimStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// CertHash names a certificate chain in PushPull.CertHave: the first 8 bytes of
// the SHA-256 of the chain's bytes, big-endian. A collision only makes the
// answerer leave out a chain the asker lacks, which the next exchange with
// another member may bring.
func CertHash(chain []byte) uint64 {
	h := sha256.Sum256(chain)
	return binary.BigEndian.Uint64(h[:8])
}
