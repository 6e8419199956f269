-- wrk script: GET with the bearer token.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RAWORC_BENCH_TOKEN")
