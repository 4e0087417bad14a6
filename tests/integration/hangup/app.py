"""A handler that waits on /control.sock for two seconds, then hangs up and stays running.

Served within two seconds, it answers ``ok``; a warm container left waiting longer is one whose
handler went away while its container lives on.
"""

import select
import socket
import time

PATIENCE_SECONDS = 2.0

control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect("/control.sock")
readable, _, _ = select.select([control], [], [], PATIENCE_SECONDS)
if not readable:
    control.close()
    time.sleep(3600)
_, fds, _, _ = socket.recv_fds(control, 1024, 1)
client = socket.socket(fileno=fds[0])
client.recv(65536)
client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
client.close()
