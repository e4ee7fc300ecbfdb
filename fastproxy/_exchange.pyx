# cython: language_level=3
"""An exchange's one reset (rules in _exchange.pxd)."""

from posix.unistd cimport close

from fastproxy._http cimport BODY_CHUNKED, BODY_LENGTH, chunk_reset


cdef class Exchange:
    def __cinit__(self):
        self.answer_fd = -1
        self.spool_fd = -1

    def __dealloc__(self):
        if self.answer_fd >= 0:
            close(self.answer_fd)
        if self.spool_fd >= 0:
            close(self.spool_fd)

    cdef void start(self, Py_ssize_t req_start, Py_ssize_t head_len) noexcept:
        """A request head of head_len bytes at req_start has been parsed into self.req: begin afresh."""
        self.req_start = req_start
        self.req_head_len = head_len
        self.fwd = req_start + head_len
        self.replayable = 1
        self.req_body_seen = 0
        self.sent_continue = 0
        self.scanned = 0
        self.body_start = 0
        self.body_bytes = 0
        if self.spool_fd >= 0:
            close(self.spool_fd)
            self.spool_fd = -1
        self.spool_len = 0
        self.spool_off = 0
        self.route = -1
        self.filters = 0
        self.chain = None
        self.group = -1
        self.key = 0
        self.n_tried = 0
        self.picked = -1
        self.server = -1
        self.picked_at = 0
        self.response_seconds = 0
        self.sticky_server = -1
        self.cookie_server = -1
        self.waiting = 0
        self.wait_deadline = 0
        self.last_failure = 0
        self.no_pool = 0
        self.resp_state = RS_WAIT_HEAD
        self.n_interim = 0
        self.resp_started = 0
        self.keep_alive = 0
        self.framing = FRAME_AS_IS
        self.resp_left = 0
        self.status = 0
        self.bytes_out = 0
        self.answer_head_len = 0
        self.answer_owner = None
        self.answer_body = NULL
        self.answer_len = 0
        self.answer_file_left = 0
        self.hook_request = None
        self.hook_response = None
        self.body_keep = None
        self.tee_off = 0
        self.log_open = 0
        self.rctr = NULL
        self.started = 0
        self.timed = 0
        self.rewind()

    cdef void rewind(self) noexcept:
        """Back to the first byte of the request body: it goes (again) to a backend."""
        self.fwd = self.req_start + self.req_head_len
        self.req_body_seen = 0
        if self.req.body_kind == BODY_LENGTH:
            self.req_left = self.req.content_length
            self.req_done = self.req_left == 0
        elif self.req.body_kind == BODY_CHUNKED:
            chunk_reset(&self.req_chunk)
            self.req_done = 0
        else:
            self.req_left = 0
            self.req_done = 1
        if self.spool_fd >= 0:      # a spooled body is sent again from the start of its file
            self.spool_off = 0
            self.req_done = self.spool_len == 0

    cdef void end(self) noexcept:
        """Let go of what the exchange holds outside itself (Python objects, a file)."""
        self.chain = None
        self.answer_owner = None
        self.answer_body = NULL
        self.hook_request = None
        self.hook_response = None
        self.body_keep = None
        if self.answer_fd >= 0:
            close(self.answer_fd)
            self.answer_fd = -1
        if self.spool_fd >= 0:
            close(self.spool_fd)
            self.spool_fd = -1


cdef class ExchangePool:
    def __cinit__(self, int cap=256):
        self.spare = []
        self.cap = cap

    cdef Exchange take(self):
        self.in_use += 1
        if self.spare:
            return <Exchange>self.spare.pop()
        return Exchange.__new__(Exchange)

    cdef void give(self, Exchange ex):
        """The exchange is over (its end() was called): keep it for the next request, up to cap."""
        self.in_use -= 1
        if len(self.spare) < self.cap:
            self.spare.append(ex)

    @property
    def exchanges_in_use(self):
        return self.in_use
