package prober

import (
	"context"
	"net/url"

	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/access"
	proberv1 "github.com/switchboard-net/switchboard/proto/switchboard/prober/v1"
)

// Methods is the permission each prober RPC needs. Running and
// (un)scheduling jobs aims the prober's packets, so it is the operator's;
// reading the schedule and the results needs read on every service, and
// such readers see checks redacted (redactResult, redactJob).
var Methods = access.Methods{
	proberv1.Prober_Run_FullMethodName:        access.Static(access.Operator()),
	proberv1.Prober_Schedule_FullMethodName:   access.Static(access.Operator()),
	proberv1.Prober_Unschedule_FullMethodName: access.Static(access.Operator()),
	proberv1.Prober_ListJobs_FullMethodName:   access.Static(access.Service("*", access.Read)),
	proberv1.Prober_Results_FullMethodName:    access.Static(access.Service("*", access.Read)),
}

// redactedMark replaces a redacted field of a job spec.
const redactedMark = "<redacted>"

// redactedError is the error of a failed check as a caller without the
// operator permission sees it.
const redactedError = "check failed (the detail needs the operator permission)"

// seesDetail reports whether the caller of ctx may see what a check's
// target answered: operators, and every caller when no ACL is in force.
func seesDetail(ctx context.Context) bool { return access.Allowed(ctx, access.Operator()) }

// redactResult returns res as the caller of ctx may see it. A check's
// detail and error may quote the target's answer (a malformed response's
// first bytes) or tell how the body compared with expect_body; a caller
// without the operator permission gets the check's pass/fail, HTTP status
// and duration only. Other kinds of result carry nothing a target sent
// and are returned as they are. res itself is never modified.
func redactResult(ctx context.Context, res *proberv1.JobResult) *proberv1.JobResult {
	c := res.GetCheck()
	if c == nil || seesDetail(ctx) {
		return res
	}
	out := proto.Clone(res).(*proberv1.JobResult)
	out.Result = &proberv1.JobResult_Check{Check: &proberv1.CheckResult{
		Ok: c.GetOk(), StatusCode: c.GetStatusCode(), Duration: c.GetDuration(),
	}}
	if out.GetError() != "" {
		out.Error = redactedError
	}
	return out
}

// redactResults applies redactResult to each result.
func redactResults(ctx context.Context, rs []*proberv1.JobResult) []*proberv1.JobResult {
	if seesDetail(ctx) {
		return rs
	}
	out := make([]*proberv1.JobResult, len(rs))
	for i, r := range rs {
		out[i] = redactResult(ctx, r)
	}
	return out
}

// redactJob returns j as a caller without the operator permission may
// see it: a check's expect_body pattern is hidden (with the pass/fail it
// would tell what the body holds), and so are a target URL's credentials
// and query. j itself is never modified.
func redactJob(j *proberv1.Job) *proberv1.Job {
	c := j.GetSpec().GetCheck()
	if c == nil {
		return j
	}
	out := proto.Clone(j).(*proberv1.Job)
	oc := out.GetSpec().GetCheck()
	if oc.GetExpectBody() != "" {
		oc.ExpectBody = redactedMark
	}
	if u, err := url.Parse(oc.GetTarget()); err == nil && (u.User != nil || u.RawQuery != "") {
		u.User = nil
		if u.RawQuery != "" {
			u.RawQuery = "redacted"
		}
		oc.Target = u.String()
	}
	return out
}

// redactJobs applies redactJob to each job for a caller without the
// operator permission.
func redactJobs(ctx context.Context, js []*proberv1.Job) []*proberv1.Job {
	if seesDetail(ctx) {
		return js
	}
	out := make([]*proberv1.Job, len(js))
	for i, j := range js {
		out[i] = redactJob(j)
	}
	return out
}
