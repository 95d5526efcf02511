"""Run llama.cpp's own OpenAI-compatible HTTP server (the `xllamacpp` wheel) in
this process, for tests that need a real counterpart.

    python llamacpp_server.py MODEL.gguf SERVED_NAME ADDRESS_FILE

It listens on 127.0.0.1 port 0: llama.cpp's server binds the port the kernel
picks (no bind, drop and rebind) and reports it, and this writes the address
(http://127.0.0.1:PORT) to ADDRESS_FILE (atomically, by rename) once the model
is loaded and the server listens. Then it waits until it is killed. One
process per server, so that a test can SIGKILL it or freeze it with SIGSTOP.
"""

import os
import signal
import sys

import xllamacpp


def main() -> None:
    model, served_name, address_file = sys.argv[1:4]
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = [served_name]
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_ctx = 256
    params.n_predict = 16
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.n_threads_http = 4
    params.warmup = False
    server = xllamacpp.Server(params)  # returns once the server listens
    temporary = address_file + ".tmp"
    with open(temporary, "w") as f:
        f.write(server.listening_address)
    os.replace(temporary, address_file)
    # SIGTERM and SIGINT end the process (their default actions); until then
    # the server's own threads answer.
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
