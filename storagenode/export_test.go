package storagenode

import "context"

// SetTransferHook makes the node call f before every transfer page it
// pulls (page counts from 0 within one pass over one range).
func SetTransferHook(c *Config, f func(ctx context.Context, page int)) { c.transferHook = f }
