/* The C ABI of the Rust core (src/ffi/). The numbers below are declared
 * once in src/abi.rs; a Rust test (abi::tests) fails when this list and
 * that one differ in any name or value. */
#ifndef PAGI_CORE_H
#define PAGI_CORE_H
#include <stdint.h>
#include <stddef.h>

/* Return codes. */
#define PAGI_OK 0
#define PAGI_PENDING 1
#define PAGI_GONE 2
#define PAGI_ERR (-1)
#define PAGI_ERR_PANIC (-99)

/* Record kinds of pagi_server_drain. */
#define PAGI_REC_REQUEST 1
#define PAGI_REC_BODY 2
#define PAGI_REC_DISCONNECT 3
#define PAGI_REC_DRAIN 4
#define PAGI_REC_LOG 5
#define PAGI_REC_IDLE 6
#define PAGI_REC_WS_MESSAGE 7
#define PAGI_REC_EOF 8
#define PAGI_REC_RETURNED 9

/* REQUEST record flags. */
#define PAGI_F_BODY_EMPTY 1
#define PAGI_F_PATH_UTF8 2
#define PAGI_F_UNIX 4
#define PAGI_F_SSE 8
#define PAGI_F_EXPECT 16
#define PAGI_F_WEBSOCKET 32
#define PAGI_F_TLS 64

/* LOG record levels. */
#define PAGI_LOG_ERROR 1
#define PAGI_LOG_WARN 2
#define PAGI_LOG_DEBUG 3

/* Flags of a head parsed by pagi_parse_head. */
#define PAGI_HEAD_CHUNKED 1
#define PAGI_HEAD_EXPECT 2
#define PAGI_HEAD_HAS_LENGTH 4
#define PAGI_HEAD_PATH_UTF8 8

/* Phases of pagi_server_shutdown. */
#define PAGI_SHUTDOWN_GRACEFUL 1
#define PAGI_SHUTDOWN_FORCE 2

/* Bodies of at least this many bytes are read in place (pagi_send_body_held). */
#define PAGI_HELD_MIN 16384

/* Operations of pagi_request_end. */
#define PAGI_END_FORGET 0
#define PAGI_END_ABORT 1

typedef struct PagiServer PagiServer;

int32_t pagi_server_new(const uint8_t *cfg, size_t len, PagiServer **out, char *err, size_t err_cap);
void pagi_server_free(PagiServer *s);
int32_t pagi_format_log(const uint8_t *fmt, size_t fmt_len, const uint8_t *fields, size_t fields_len,
                        const uint8_t **out, size_t *out_len, char *err, size_t err_cap);
int32_t pagi_check_log_format(const uint8_t *fmt, size_t len, char *err, size_t err_cap);
int32_t pagi_bind_only(const uint8_t *cfg, size_t len, const uint8_t **out, size_t *out_len,
                       char *err, size_t err_cap);
int32_t pagi_server_listen(PagiServer *s, const uint8_t **out, size_t *out_len);
int32_t pagi_server_text(PagiServer *s, const uint8_t **out, size_t *out_len);
int32_t pagi_server_fd(PagiServer *s);
int32_t pagi_server_drain(PagiServer *s, const uint8_t **out, size_t *out_len);
int32_t pagi_server_flush(PagiServer *s);
int32_t pagi_send_start(PagiServer *s, uint64_t id, uint16_t status, const uint8_t *hdrs, size_t len);
int32_t pagi_send_body(PagiServer *s, uint64_t id, const uint8_t *data, size_t len, int32_t fin,
                       const uint8_t **log, size_t *log_len);
int32_t pagi_send_body_held(PagiServer *s, uint64_t id, void *sv, const uint8_t *data, size_t len,
                            int32_t fin, const uint8_t **log, size_t *log_len);
int32_t pagi_take_returned(PagiServer *s, void *const **out, size_t *n);
int32_t pagi_send_file(PagiServer *s, uint64_t id, const uint8_t *path, size_t path_len, int32_t fd,
                       int64_t offset, int64_t length, int32_t fin, const uint8_t **log,
                       size_t *log_len, char *err, size_t err_cap);
int32_t pagi_parse_head(const uint8_t *buf, size_t len, size_t max_line, size_t max_size,
                        size_t max_count, const uint8_t **out, size_t *out_len);
int32_t pagi_send_trailers(PagiServer *s, uint64_t id, const uint8_t *hdrs, size_t len,
                           const uint8_t **log, size_t *log_len);
int32_t pagi_ws_accept(PagiServer *s, uint64_t id, const uint8_t *sub, size_t sub_len,
                       const uint8_t *hdrs, size_t len);
int32_t pagi_ws_send(PagiServer *s, uint64_t id, int32_t text, const uint8_t *data, size_t len);
int32_t pagi_ws_close(PagiServer *s, uint64_t id, uint16_t code, const uint8_t *reason, size_t len);
int32_t pagi_ws_ack(PagiServer *s, uint64_t id, size_t n);
int32_t pagi_ws_waiting(PagiServer *s, uint64_t id, uint64_t taken);
int32_t pagi_ws_keepalive(PagiServer *s, uint64_t id, double interval, double timeout);
int32_t pagi_sse_stream(PagiServer *s, uint64_t id, double interval, const uint8_t *frame,
                        size_t len);
int32_t pagi_sse_touch(PagiServer *s, uint64_t id);
int32_t pagi_unstart(PagiServer *s, uint64_t id);
int32_t pagi_request_end(PagiServer *s, uint64_t id, int32_t op);
int32_t pagi_buffered(PagiServer *s, uint64_t id, uint64_t *out);
int32_t pagi_body_ack(PagiServer *s, uint64_t id, size_t n);
int32_t pagi_server_shutdown(PagiServer *s, int32_t phase);
int32_t pagi_server_connections(PagiServer *s);
int32_t pagi_server_pause_accept(PagiServer *s, uint32_t ms);

#endif
