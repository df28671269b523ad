"""What users run beside the service, not the service itself: the demos (`demo`,
`demo_uc2`), the benchmarks (`bench*`, `storm_*`), the sample consumer (`consumer`, with
its active/standby `switchover`) and the running `stack` they all drive. Only the CLI
imports this package."""
