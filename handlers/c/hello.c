/*
 * The classic minimal faasd handler, in C: connect to /control.sock, take the first fd that
 * arrives with the message (the client's TCP socket), answer one HTTP request on it, exit.
 * It ignores the JSON metadata, as handler protocol v1 allows.
 *
 * Build: gcc -static -Os -o hello hello.c
 * Usage: hello [BODY]    answers BODY and a newline ("hello from C" without an argument);
 *                        FAAS_CONTROL_SOCKET overrides /control.sock, for tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Connect to the control socket and return the fd that came with the daemon's message. */
static int receive_client(const char *path) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(address.sun_path)) {
        fprintf(stderr, "hello: control socket path too long: %s\n", path);
        return -1;
    }
    strcpy(address.sun_path, path);
    int control = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (control < 0 || connect(control, (struct sockaddr *)&address, sizeof(address)) < 0) {
        fprintf(stderr, "hello: connect %s: %s\n", path, strerror(errno));
        return -1;
    }
    char metadata[1024];
    union { /* aligned as a cmsghdr must be */
        char buffer[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ancillary;
    struct iovec iov = {.iov_base = metadata, .iov_len = sizeof(metadata)};
    struct msghdr message = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ancillary.buffer, .msg_controllen = sizeof(ancillary.buffer)};
    ssize_t got = recvmsg(control, &message, MSG_CMSG_CLOEXEC);
    close(control);
    if (got < 0) {
        fprintf(stderr, "hello: recvmsg: %s\n", strerror(errno));
        return -1;
    }
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header == NULL || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS ||
        header->cmsg_len < CMSG_LEN(sizeof(int))) {
        fputs("hello: the control message carried no file descriptor\n", stderr);
        return -1;
    }
    int client;
    memcpy(&client, CMSG_DATA(header), sizeof(client));
    return client;
}

/* Read up to the blank line that ends the request headers, however long they are. */
static int read_headers(int fd) {
    static const char end[] = "\r\n\r\n";
    int matched = 0;
    char buffer[4096];
    for (;;) {
        ssize_t got = read(fd, buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        for (ssize_t i = 0; i < got; i++) {
            matched = buffer[i] == end[matched] ? matched + 1 : buffer[i] == '\r';
            if (matched == 4) return 0;
        }
    }
}

static int write_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t sent = write(fd, data, length);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return -1;
        data += sent;
        length -= (size_t)sent;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *path = getenv("FAAS_CONTROL_SOCKET");
    int client = receive_client(path ? path : "/control.sock");
    if (client < 0) return 1;
    /* O_NONBLOCK belongs to the open file, and the daemon's event loop set it: clear it to block. */
    fcntl(client, F_SETFL, fcntl(client, F_GETFL) & ~O_NONBLOCK);
    if (read_headers(client) < 0) {
        fputs("hello: the client left before sending a whole request\n", stderr);
        return 0;
    }

    const char *text = argc > 1 ? argv[1] : "hello from C";
    size_t length = strlen(text) + 1;
    char *response = malloc(length + 128);
    if (response == NULL) return 1;
    int head = snprintf(response, 128,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n",
                        length);
    memcpy(response + head, text, length - 1);
    response[head + length - 1] = '\n';
    if (write_all(client, response, head + length) < 0) {
        fprintf(stderr, "hello: write: %s\n", strerror(errno));
        return 1;
    }

    /* Half-close, then read what the client still sends (a body we did not want) for up to a
     * second: closing with unread input makes the kernel answer with a reset, which can destroy
     * the response on its way (RFC 9112 section 9.6). */
    shutdown(client, SHUT_WR);
    struct timeval second = {.tv_sec = 1};
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &second, sizeof(second));
    char sink[4096];
    while (read(client, sink, sizeof(sink)) > 0) {
    }
    close(client);
    return 0;
}
