"""One instance's flows around its local state: membership in the ledger, admission, the lease
lifecycle and the allocation report. limiter.Limiter joins them."""
