-- wrk script: POST a user message to one session.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("RAWORC_BENCH_TOKEN")
wrk.body = '{"content": "benchmark message with a little text in it"}'
