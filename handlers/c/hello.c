/*
 * The classic minimal faasd handler, in C: connect to /control.sock, take the first fd that
 * arrives with the message, answer one HTTP request on it, exit. It ignores the metadata.
 * Build: gcc -static -Os -o hello hello.c    Usage: hello [BODY]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int receive_client(const char *path) {
    int control = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strncpy(address.sun_path, path, sizeof(address.sun_path) - 1);
    if (control < 0 || connect(control, (struct sockaddr *)&address, sizeof(address)) < 0) {
        perror("connect /control.sock");
        return -1;
    }
    char metadata[1024];
    char ancillary[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = metadata, .iov_len = sizeof(metadata)};
    struct msghdr message = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ancillary, .msg_controllen = sizeof(ancillary)};
    if (recvmsg(control, &message, 0) < 0) {
        perror("recvmsg");
        return -1;
    }
    close(control);
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header == NULL || header->cmsg_type != SCM_RIGHTS) {
        fputs("no fd in the control message\n", stderr);
        return -1;
    }
    int client;
    memcpy(&client, CMSG_DATA(header), sizeof(client));
    return client;
}

int main(int argc, char **argv) {
    const char *path = getenv("FAAS_CONTROL_SOCKET");
    int client = receive_client(path ? path : "/control.sock");
    if (client < 0) return 1;

    /* Read until the end of the request headers (or the client stops sending). */
    char request[8192];
    size_t used = 0;
    ssize_t got;
    while (used < sizeof(request) - 1 && (got = read(client, request + used, sizeof(request) - 1 - used)) > 0) {
        used += (size_t)got;
        request[used] = '\0';
        if (strstr(request, "\r\n\r\n")) break;
    }

    char body[4096];
    snprintf(body, sizeof(body), "%s\n", argc > 1 ? argv[1] : "hello from C");
    char response[8192];
    int length = snprintf(response, sizeof(response),
                          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n%s",
                          strlen(body), body);
    for (int sent = 0; sent < length;) {
        ssize_t n = write(client, response + sent, (size_t)(length - sent));
        if (n <= 0) return 1;
        sent += (int)n;
    }
    shutdown(client, SHUT_WR);
    close(client);
    return 0;
}
