"""hoso in layers: core → national (engine) → domain → usecases, training → cli. README: "How it is built"."""
