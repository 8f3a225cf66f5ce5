"""The demo: a legacy personalization API (`veil.demo.upstream`) over synthetic customers
(`veil.demo.data`), the thing veil is put in front of in examples, tests and benchmarks."""
