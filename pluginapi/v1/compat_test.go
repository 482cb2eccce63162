package pluginapiv1_test

import (
	"fmt"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/celluster/celluster/pluginapi/v1"
)

// TestNoBreakingChanges compares the API as compiled into this tree with the
// committed image of v1 (image.binpb, written by `make api-image`): within v1
// nothing may be removed, renumbered, renamed or retyped; additions are fine.
func TestNoBreakingChanges(t *testing.T) {
	b, err := os.ReadFile("image.binpb")
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatalf("image.binpb: %v", err)
	}
	if len(set.GetFile()) == 0 {
		t.Fatal("image.binpb holds no files")
	}
	for _, problem := range breakingChanges(&set, protoregistry.GlobalFiles) {
		t.Error(problem)
	}
}

// breakingChanges lists every incompatible difference between the image
// (old) and the files registered in cur (new).
func breakingChanges(old *descriptorpb.FileDescriptorSet, cur *protoregistry.Files) []string {
	var out []string
	for _, f := range old.GetFile() {
		nf, err := cur.FindFileByPath(f.GetName())
		if err != nil {
			out = append(out, fmt.Sprintf("file %s was removed", f.GetName()))
			continue
		}
		if nf.Package() != protoreflect.FullName(f.GetPackage()) {
			out = append(out, fmt.Sprintf("file %s: package changed from %s to %s", f.GetName(), f.GetPackage(), nf.Package()))
		}
		if g := protodesc.ToFileDescriptorProto(nf).GetOptions().GetGoPackage(); g != f.GetOptions().GetGoPackage() {
			out = append(out, fmt.Sprintf("file %s: go_package changed from %s to %s", f.GetName(), f.GetOptions().GetGoPackage(), g))
		}
		prefix := f.GetPackage() + "."
		for _, m := range f.GetMessageType() {
			out = append(out, messageChanges(prefix+m.GetName(), m, cur)...)
		}
		for _, e := range f.GetEnumType() {
			out = append(out, enumChanges(prefix+e.GetName(), e, cur)...)
		}
		for _, s := range f.GetService() {
			out = append(out, serviceChanges(prefix+s.GetName(), s, cur)...)
		}
	}
	return out
}

func messageChanges(name string, m *descriptorpb.DescriptorProto, cur *protoregistry.Files) []string {
	d, err := cur.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return []string{fmt.Sprintf("message %s was removed", name)}
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return []string{fmt.Sprintf("%s is no longer a message", name)}
	}
	var out []string
	for _, f := range m.GetField() {
		nf := md.Fields().ByNumber(protoreflect.FieldNumber(f.GetNumber()))
		where := fmt.Sprintf("message %s field %d (%s)", name, f.GetNumber(), f.GetName())
		if nf == nil {
			out = append(out, where+" was removed")
			continue
		}
		if string(nf.Name()) != f.GetName() {
			out = append(out, fmt.Sprintf("%s was renamed to %s", where, nf.Name()))
		}
		if nf.Kind() != protoreflect.Kind(f.GetType()) {
			out = append(out, fmt.Sprintf("%s changed type from %v to %v", where, protoreflect.Kind(f.GetType()), nf.Kind()))
		}
		if nf.Cardinality() != protoreflect.Cardinality(f.GetLabel()) {
			out = append(out, fmt.Sprintf("%s changed cardinality from %v to %v", where, protoreflect.Cardinality(f.GetLabel()), nf.Cardinality()))
		}
		if tn := f.GetTypeName(); tn != "" {
			var got protoreflect.FullName
			switch {
			case nf.Message() != nil:
				got = nf.Message().FullName()
			case nf.Enum() != nil:
				got = nf.Enum().FullName()
			}
			if "."+string(got) != tn {
				out = append(out, fmt.Sprintf("%s changed type from %s to .%s", where, tn, got))
			}
		}
	}
	for _, nested := range m.GetNestedType() {
		if nested.GetOptions().GetMapEntry() {
			continue
		}
		out = append(out, messageChanges(name+"."+nested.GetName(), nested, cur)...)
	}
	for _, e := range m.GetEnumType() {
		out = append(out, enumChanges(name+"."+e.GetName(), e, cur)...)
	}
	return out
}

func enumChanges(name string, e *descriptorpb.EnumDescriptorProto, cur *protoregistry.Files) []string {
	d, err := cur.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return []string{fmt.Sprintf("enum %s was removed", name)}
	}
	ed, ok := d.(protoreflect.EnumDescriptor)
	if !ok {
		return []string{fmt.Sprintf("%s is no longer an enum", name)}
	}
	var out []string
	for _, v := range e.GetValue() {
		nv := ed.Values().ByNumber(protoreflect.EnumNumber(v.GetNumber()))
		switch {
		case nv == nil:
			out = append(out, fmt.Sprintf("enum %s value %d (%s) was removed", name, v.GetNumber(), v.GetName()))
		case string(nv.Name()) != v.GetName():
			out = append(out, fmt.Sprintf("enum %s value %d was renamed from %s to %s", name, v.GetNumber(), v.GetName(), nv.Name()))
		}
	}
	return out
}

func serviceChanges(name string, s *descriptorpb.ServiceDescriptorProto, cur *protoregistry.Files) []string {
	d, err := cur.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return []string{fmt.Sprintf("service %s was removed", name)}
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return []string{fmt.Sprintf("%s is no longer a service", name)}
	}
	var out []string
	for _, m := range s.GetMethod() {
		nm := sd.Methods().ByName(protoreflect.Name(m.GetName()))
		where := fmt.Sprintf("service %s method %s", name, m.GetName())
		if nm == nil {
			out = append(out, where+" was removed")
			continue
		}
		if "."+string(nm.Input().FullName()) != m.GetInputType() || "."+string(nm.Output().FullName()) != m.GetOutputType() {
			out = append(out, fmt.Sprintf("%s changed signature from (%s) %s to (.%s) .%s", where, m.GetInputType(), m.GetOutputType(), nm.Input().FullName(), nm.Output().FullName()))
		}
		if nm.IsStreamingClient() != m.GetClientStreaming() || nm.IsStreamingServer() != m.GetServerStreaming() {
			out = append(out, where+" changed streaming")
		}
	}
	return out
}

// TestBreakingChangesDetected proves the check fails on real breaks: it
// mutates a copy of the image and expects each change to be reported.
func TestBreakingChangesDetected(t *testing.T) {
	b, err := os.ReadFile("image.binpb")
	if err != nil {
		t.Fatal(err)
	}
	mutations := map[string]func(*descriptorpb.FileDescriptorSet){
		"renumbered field": func(s *descriptorpb.FileDescriptorSet) {
			findMsg(s, "VerbRequest").GetField()[0].Number = proto.Int32(99)
		},
		"retyped field": func(s *descriptorpb.FileDescriptorSet) {
			findMsg(s, "Sample").GetField()[1].Type = descriptorpb.FieldDescriptorProto_TYPE_FLOAT.Enum()
		},
		"removed method": func(s *descriptorpb.FileDescriptorSet) {
			for _, f := range s.GetFile() {
				for _, svc := range f.GetService() {
					if svc.GetName() == "Host" {
						svc.Method = append(svc.Method, &descriptorpb.MethodDescriptorProto{Name: proto.String("Gone"), InputType: proto.String(".x"), OutputType: proto.String(".y")})
					}
				}
			}
		},
		"removed enum value": func(s *descriptorpb.FileDescriptorSet) {
			for _, f := range s.GetFile() {
				for _, e := range f.GetEnumType() {
					if e.GetName() == "Outcome" {
						e.Value = append(e.Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String("OUTCOME_GONE"), Number: proto.Int32(42)})
					}
				}
			}
		},
	}
	for name, mutate := range mutations {
		var set descriptorpb.FileDescriptorSet
		if err := proto.Unmarshal(b, &set); err != nil {
			t.Fatal(err)
		}
		mutate(&set)
		if got := breakingChanges(&set, protoregistry.GlobalFiles); len(got) == 0 {
			t.Errorf("%s: not detected", name)
		}
	}
}

func findMsg(s *descriptorpb.FileDescriptorSet, name string) *descriptorpb.DescriptorProto {
	for _, f := range s.GetFile() {
		for _, m := range f.GetMessageType() {
			if m.GetName() == name {
				return m
			}
		}
	}
	panic("no message " + name)
}
