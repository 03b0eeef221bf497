// dashboard (being built)
