package heal

import (
	"context"
	"time"
)

// pacer spaces work at a rate of keys per second. Work is charged after it
// is done; a charge beyond the budget (one second's worth) sleeps it off.
// Only the worker goroutine uses it.
type pacer struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate, tokens: rate, last: time.Now()} }

// wait charges n keys and sleeps until the budget is no longer in debt.
func (p *pacer) wait(ctx context.Context, n uint64) error {
	now := time.Now()
	p.tokens = min(p.rate, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	p.last = now
	p.tokens -= float64(n)
	if p.tokens >= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(time.Duration(-p.tokens / p.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
