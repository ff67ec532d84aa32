package format

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	// .proto source compiled in process (no protoc at the edge), pinned at v0.14.1 in go.mod.
	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/tributary-iot/tributary/devices"
)

// newProtoSource compiles a .proto file (imports resolved beside it, and the well-known types).
func newProtoSource(path, text, message string) (*Schema, error) {
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: func(name string) (io.ReadCloser, error) {
			if name == filepath.Base(path) {
				return io.NopCloser(strings.NewReader(text)), nil
			}
			return os.Open(filepath.Join(filepath.Dir(path), name))
		},
	})}
	files, err := c.Compile(context.Background(), filepath.Base(path))
	if err != nil {
		return nil, err
	}
	return newProto(files[0], message, text)
}

// newProtoDescriptorSet loads a serialized FileDescriptorSet (protoc --descriptor_set_out
// --include_imports, buf build -o).
func newProtoDescriptorSet(data []byte, message string) (*Schema, error) {
	return newProtoFromSet(data, message, "")
}

func newProtoFromSet(data []byte, message, text string) (*Schema, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("descriptor set: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("descriptor set: %w", err)
	}
	if message == "" {
		if len(set.File) == 0 {
			return nil, errors.New("descriptor set holds no file")
		}
		fd, err := files.FindFileByPath(set.File[len(set.File)-1].GetName())
		if err != nil {
			return nil, err
		}
		return newProto(fd, "", text)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(message))
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", message, err)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a message", message)
	}
	return newProto(md.ParentFile(), message, text)
}

func newProto(fd protoreflect.FileDescriptor, message, text string) (*Schema, error) {
	var md protoreflect.MessageDescriptor
	if message == "" {
		if fd.Messages().Len() != 1 {
			return nil, fmt.Errorf("%s declares %d top-level messages: name the one to decode with message: NAME", fd.Path(), fd.Messages().Len())
		}
		md = fd.Messages().Get(0)
	} else {
		if md = findMessage(fd, protoreflect.FullName(message)); md == nil {
			return nil, fmt.Errorf("message %s: not in %s (give the full name, package.Message)", message, fd.Path())
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	addFile(set, fd, map[string]bool{})
	desc, err := proto.Marshal(set)
	if err != nil {
		return nil, err
	}
	if text == "" {
		// No source: the registry's "serialized" form of the file.
		b, err := proto.Marshal(protodesc.ToFileDescriptorProto(fd))
		if err != nil {
			return nil, err
		}
		text = base64.StdEncoding.EncodeToString(b)
	}
	name := string(md.FullName())
	s := &Schema{
		Type: TypeProtobuf, Text: text, ID: ID(TypeProtobuf, text), Message: name, Index: messageIndex(md),
		Descriptor: desc, content: ContentTypeProtobuf,
	}
	s.check = func(payload []byte) (devices.Reason, string) {
		m := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(payload, m); err != nil {
			detail := "protobuf " + name + ": " + err.Error()
			if off := malformedAt(payload); off >= 0 {
				detail += " (field at byte " + strconv.Itoa(off) + ")"
			}
			return devices.ReasonNotProtobuf, detail
		}
		return devices.ReasonNone, ""
	}
	s.decode = func(payload []byte) ([]byte, error) {
		m := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(payload, m); err != nil {
			return nil, err
		}
		return protojson.MarshalOptions{Resolver: dynamicTypes(fd)}.Marshal(m)
	}
	return s, nil
}

func findMessage(fd protoreflect.FileDescriptor, name protoreflect.FullName) protoreflect.MessageDescriptor {
	var walk func(ms protoreflect.MessageDescriptors) protoreflect.MessageDescriptor
	walk = func(ms protoreflect.MessageDescriptors) protoreflect.MessageDescriptor {
		for i := range ms.Len() {
			m := ms.Get(i)
			if m.FullName() == name {
				return m
			}
			if d := walk(m.Messages()); d != nil {
				return d
			}
		}
		return nil
	}
	return walk(fd.Messages())
}

// dynamicTypes resolves Any values inside a message against its file's imports.
func dynamicTypes(fd protoreflect.FileDescriptor) *protoregistry.Types {
	t := new(protoregistry.Types)
	var add func(ms protoreflect.MessageDescriptors)
	add = func(ms protoreflect.MessageDescriptors) {
		for i := range ms.Len() {
			t.RegisterMessage(dynamicpb.NewMessageType(ms.Get(i)))
			add(ms.Get(i).Messages())
		}
	}
	add(fd.Messages())
	return t
}

func addFile(set *descriptorpb.FileDescriptorSet, fd protoreflect.FileDescriptor, seen map[string]bool) {
	if seen[fd.Path()] {
		return
	}
	seen[fd.Path()] = true
	imports := fd.Imports()
	for i := range imports.Len() {
		addFile(set, imports.Get(i).FileDescriptor, seen)
	}
	set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
}

// messageIndex is a message's Confluent message-index path: its index among the file's top-level
// messages, then among each parent's nested messages.
func messageIndex(md protoreflect.MessageDescriptor) []int {
	var path []int
	for d := protoreflect.Descriptor(md); d != nil; d = d.Parent() {
		if _, ok := d.(protoreflect.MessageDescriptor); !ok {
			break
		}
		path = append([]int{d.Index()}, path...)
	}
	return path
}

// malformedAt returns the offset of the first top-level field whose encoding is broken, or -1 when
// every field is well framed (the fault is deeper, or in a field's type).
func malformedAt(b []byte) int {
	off := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return off
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return off
		}
		off += n + m
		b = b[n+m:]
	}
	return -1
}

// newProtoRegistryText builds a protobuf schema from what a registry serves: .proto source, or
// the base64 of a FileDescriptorProto; index picks the message (Confluent's message-index path).
func newProtoRegistryText(text string, index []int) (*Schema, error) {
	var fd protoreflect.FileDescriptor
	if raw, err := base64.StdEncoding.DecodeString(text); err == nil && !strings.Contains(text, "message") {
		var fdp descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fdp); err != nil {
			return nil, fmt.Errorf("serialized schema: %w", err)
		}
		if fd, err = protodesc.NewFile(&fdp, protoregistry.GlobalFiles); err != nil {
			return nil, fmt.Errorf("serialized schema: %w", err)
		}
	} else {
		const name = "registry.proto"
		c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			Accessor: protocompile.SourceAccessorFromMap(map[string]string{name: text}),
		})}
		files, err := c.Compile(context.Background(), name)
		if err != nil {
			return nil, err
		}
		fd = files[0]
	}
	if len(index) == 0 {
		index = []int{0}
	}
	ms := fd.Messages()
	var md protoreflect.MessageDescriptor
	for _, i := range index {
		if i < 0 || i >= ms.Len() {
			return nil, fmt.Errorf("message index %v: not in the schema", index)
		}
		md = ms.Get(i)
		ms = md.Messages()
	}
	return newProto(fd, string(md.FullName()), text)
}
