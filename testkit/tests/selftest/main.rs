//! Self-tests of the testkit: the in-memory API server, its authorizer, the MCO simulator and the
//! envtest tier, driven through kube's own client so they prove what the operator will see. One
//! test binary (one link) with a module per suite.

mod fake_api;
