// Package sparkplugpb is the Sparkplug B payload schema (sparkplug_b.proto, from the Eclipse
// Sparkplug 3.0.0 specification) compiled by protoc-gen-go. Package sparkplug decodes and encodes
// with it; devices, simulators and tests build payloads with these types.
//
// The generated file is committed, so builds and CI need no protoc. Regenerating it needs protoc
// (Debian's protobuf-compiler) and protoc-gen-go at the version go.mod pins for
// google.golang.org/protobuf (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12),
// then `go generate ./devices/sparkplug/sparkplugpb` runs the line below.
package sparkplugpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
