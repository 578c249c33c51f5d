// Package analysis judges AnalysisRuns as Argo Rollouts does: it evaluates
// a measurement's successCondition / failureCondition (expr-lang syntax,
// `result` bound to the measured value), accounts measurements against
// count, interval, failureLimit, inconclusiveLimit and
// consecutiveErrorLimit, and gives each metric and the run a phase and a
// message. Measurements come from a Provider; the providers themselves
// (meridian, prometheus, web, job) live elsewhere. "No traffic" is never a
// success or a failure: a meridian measurement with fewer requests than
// minRequests is Inconclusive.
package analysis

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"

	"github.com/expr-lang/expr"

	"github.com/meridian-mesh/meridian/api/v1alpha1"
)

// Argo Rollouts' defaults.
const (
	DefaultConsecutiveErrorLimit = 4
	DefaultMeasurementRetention  = 10
	DefaultMinRequests           = 1
)

// EvalCondition evaluates a condition with result bound to value. The
// condition must give a boolean. Besides expr-lang's builtins (len, all,
// any, ...), Argo's helpers are there: asInt, asFloat (parse a string),
// isNaN, isInf, isNil, default(value, fallback).
func EvalCondition(value any, condition string) (ok bool, err error) {
	defer func() {
		// A helper that panics (asInt on "x") is an error, not a crash.
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("evaluating %q: %v", condition, r)
		}
	}()
	env := map[string]any{
		"result":  value,
		"asInt":   asInt,
		"asFloat": asFloat,
		"isNaN":   math.IsNaN,
		"isInf":   func(f float64) bool { return math.IsInf(f, 0) },
		"isNil":   isNil,
		"default": defaultOf,
	}
	prog, err := expr.Compile(condition, expr.Env(env), expr.AsBool())
	if err != nil {
		return false, fmt.Errorf("condition %q: %w", condition, err)
	}
	out, err := expr.Run(prog, env)
	if err != nil {
		return false, fmt.Errorf("condition %q: %w", condition, err)
	}
	b, isBool := out.(bool)
	if !isBool {
		return false, fmt.Errorf("condition %q gave %T, not a boolean", condition, out)
	}
	return b, nil
}

func asInt(in any) int64 {
	switch v := in.(type) {
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			panic(err)
		}
		return n
	case float64:
		return int64(v)
	case int:
		return int64(v)
	case int64:
		return v
	}
	panic(fmt.Sprintf("asInt: %T is not a number", in))
}

func asFloat(in any) float64 {
	switch v := in.(type) {
	case string:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			panic(err)
		}
		return f
	case float64:
		return v
	case int:
		return float64(v)
	case int64:
		return float64(v)
	}
	panic(fmt.Sprintf("asFloat: %T is not a number", in))
}

func isNil(in any) bool {
	if in == nil {
		return true
	}
	v := reflect.ValueOf(in)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
		return v.IsNil()
	}
	return false
}

func defaultOf(in, fallback any) any {
	if isNil(in) {
		return fallback
	}
	if f, ok := in.(float64); ok && math.IsNaN(f) {
		return fallback
	}
	return in
}

// Judge gives a measured value's phase, as Argo's EvaluateResult: with
// only a successCondition, a value that does not meet it is Failed; with
// only a failureCondition, one that does not meet it is Successful; with
// both, one that meets neither is Inconclusive (the failure condition wins
// when both hold); with none, every value is Successful. A condition that
// does not evaluate is an Error.
func Judge(metric *v1alpha1.Metric, value any) (v1alpha1.AnalysisPhase, error) {
	var success, failure bool
	var err error
	if metric.SuccessCondition != "" {
		if success, err = EvalCondition(value, metric.SuccessCondition); err != nil {
			return v1alpha1.AnalysisPhaseError, err
		}
	}
	if metric.FailureCondition != "" {
		if failure, err = EvalCondition(value, metric.FailureCondition); err != nil {
			return v1alpha1.AnalysisPhaseError, err
		}
	}
	switch {
	case metric.SuccessCondition == "" && metric.FailureCondition == "":
		return v1alpha1.AnalysisPhaseSuccessful, nil
	case metric.FailureCondition == "":
		failure = !success
	case metric.SuccessCondition == "":
		success = !failure
	}
	switch {
	case failure:
		return v1alpha1.AnalysisPhaseFailed, nil
	case success:
		return v1alpha1.AnalysisPhaseSuccessful, nil
	}
	return v1alpha1.AnalysisPhaseInconclusive, nil
}

// ErrNoTraffic is the reason of a measurement taken over too few requests.
var ErrNoTraffic = errors.New("no traffic")

// JudgeResult judges a provider's Result: a meridian measurement with fewer
// requests than minRequests (default 1) is Inconclusive with a message
// saying so, before any condition is looked at.
func JudgeResult(metric *v1alpha1.Metric, r Result) (v1alpha1.AnalysisPhase, string) {
	if mm := metric.Provider.Meridian; mm != nil && r.Requests != nil {
		min := int64(DefaultMinRequests)
		if mm.MinRequests != nil {
			min = *mm.MinRequests
		}
		if *r.Requests < min {
			return v1alpha1.AnalysisPhaseInconclusive, fmt.Sprintf("%v: %d requests in the window, fewer than minRequests (%d)", ErrNoTraffic, *r.Requests, min)
		}
	}
	phase, err := Judge(metric, r.Value)
	if err != nil {
		return phase, err.Error()
	}
	return phase, ""
}
