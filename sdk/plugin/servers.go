package plugin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	pb "github.com/celluster/celluster/pluginapi/v1"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pluginServer serves the base service Plugin.
type pluginServer struct {
	pb.UnimplementedPluginServer
	s      *Server
	broker *goplugin.GRPCBroker
}

func (p *pluginServer) Info(context.Context, *pb.InfoRequest) (*pb.PluginInfo, error) {
	return infoToPB(p.s.info, p.s.kind), nil
}

// Configure connects to the host service the request names (if any),
// then calls the plugin's Configure.
func (p *pluginServer) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	if p.s.life.Err() != nil {
		return nil, status.Error(codes.Unavailable, "celluster plugin: the plugin is shutting down")
	}
	if id := req.GetHostBrokerId(); id != 0 {
		conn, err := p.broker.DialWithOptions(id, forwardTrace()...)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "celluster plugin: dialing the host service on broker id %d: %v", id, err)
		}
		p.s.setHost(newHostConn(p.s.life, conn))
	} else {
		p.s.setHost(nil)
	}
	if c, ok := p.s.impl.(Configurer); ok {
		if err := c.Configure(ctx, configFromPB(req), p.s.Host()); err != nil {
			return nil, toStatus(fmt.Errorf("configuring plugin %s: %w", p.s.info.Name, err))
		}
	}
	return &pb.ConfigureResponse{}, nil
}

// telemetryServer serves the service Telemetry.
type telemetryServer struct {
	pb.UnimplementedTelemetryServer
	impl TelemetrySource
}

func (t *telemetryServer) Signals(ctx context.Context, _ *pb.SignalsRequest) (*pb.SignalsResponse, error) {
	signals, err := t.impl.Signals(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	c := &conv{}
	resp := &pb.SignalsResponse{Signals: convertSlice(signals, func(s Signal) *pb.SignalDesc { return signalToPB(c, s) })}
	if c.err != nil {
		return nil, status.Errorf(codes.Internal, "plugin returned an invalid signal: %v", c.err)
	}
	return resp, nil
}

func (t *telemetryServer) Stream(req *pb.StreamRequest, stream grpc.ServerStreamingServer[pb.SampleBatch]) error {
	ctx := stream.Context()
	interval := durationFromPB(req.GetInterval())
	if interval <= 0 {
		interval = DefaultInterval
	}
	var (
		mu   sync.Mutex
		done bool
	)
	send := func(samples []Sample) error {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return status.Error(codes.Canceled, "celluster plugin: send called after Stream returned")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if len(samples) == 0 {
			return nil
		}
		return stream.Send(&pb.SampleBatch{Samples: samplesToPB(samples, time.Now())})
	}
	err := t.impl.Stream(ctx, interval, send)
	mu.Lock()
	done = true
	mu.Unlock()
	if ctx.Err() != nil {
		return nil
	}
	return toStatus(err)
}

// intentServer serves the service IntentParser.
type intentServer struct {
	pb.UnimplementedIntentParserServer
	impl IntentParser
}

func (i *intentServer) Accepts(context.Context, *pb.AcceptsRequest) (*pb.AcceptsResponse, error) {
	ext, media := i.impl.Accepts()
	return &pb.AcceptsResponse{Extensions: cloneStrings(ext), MediaTypes: cloneStrings(media)}, nil
}

func (i *intentServer) Parse(ctx context.Context, req *pb.ParseRequest) (*pb.ParseResponse, error) {
	spec, diags, err := i.impl.Parse(ctx, req.GetFilename(), req.GetMediaType(), req.GetContent())
	if err != nil {
		return nil, toStatus(err)
	}
	c := &conv{}
	resp := &pb.ParseResponse{Diagnostics: convertSlice(diags, func(d Diagnostic) *pb.Diagnostic {
		if d.File == "" {
			d.File = req.GetFilename()
		}
		return diagnosticToPB(c, d)
	})}
	if c.err != nil {
		return nil, status.Errorf(codes.Internal, "plugin returned an invalid diagnostic: %v", c.err)
	}
	if resp.Spec, err = intentSpecToPB(spec); err != nil {
		return nil, status.Errorf(codes.Internal, "plugin returned an invalid spec: %v", err)
	}
	return resp, nil
}

// verbServer serves the service Verb.
type verbServer struct {
	pb.UnimplementedVerbServer
	impl VerbPlugin
	host Host
}

func (v *verbServer) Verbs(context.Context, *pb.VerbsRequest) (*pb.VerbsResponse, error) {
	return &pb.VerbsResponse{Verbs: cloneStrings(v.impl.Verbs())}, nil
}

func (v *verbServer) Execute(ctx context.Context, req *pb.VerbRequest) (*pb.VerbResponse, error) {
	if verbs := v.impl.Verbs(); !slices.Contains(verbs, req.GetVerb()) {
		return nil, status.Errorf(codes.Unimplemented, "verb %q is not implemented by this plugin (it implements %s)", req.GetVerb(), strings.Join(verbs, ", "))
	}
	res, err := v.impl.Execute(ctx, v.host, verbRequestFromPB(req))
	if err != nil {
		return nil, toStatus(err)
	}
	if res.Outcome == 0 {
		return nil, status.Errorf(codes.Internal, "plugin returned a VerbResult with no Outcome for verb %q", req.GetVerb())
	}
	resp, err := verbResultToPB(res)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "plugin returned an invalid VerbResult: %v", err)
	}
	return resp, nil
}
