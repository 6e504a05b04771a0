/*-------------------------------------------------------------------------
 *
 * nfq_delay.c
 *     Hold every packet of a netfilter queue back for a fixed time, then
 *     let it go: a slow link for the network-fault test, on a kernel that
 *     has no netem qdisc.
 *
 * Usage:  nfq_delay QUEUE_NUMBER DELAY_MS
 *
 * An iptables rule "-j NFQUEUE --queue-num QUEUE_NUMBER" sends packets
 * here (this kernel's nf_tables has no queue expression, but the xtables
 * NFQUEUE target works through nft_compat).  Every packet is accepted
 * DELAY_MS after it arrived, in arrival order, so TCP sees a longer round
 * trip and no reordering.  Only the packet's metadata is copied to us.
 *
 * Runs until SIGTERM or SIGINT.  Packets still held then are released by
 * the kernel's queue teardown (dropped; TCP sends them again), which is
 * why the test removes its rule before it stops this program.
 *
 * Test-only code: it is built by test/netfault/netlab.sh, never installed.
 *
 * Copyright (c) 2026, the durable_cluster developers
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

/* packets held at once; beyond that the kernel queue fills and drops */
#define MAX_HELD 65536

typedef struct HeldPacket
{
	uint32_t	id;
	int64_t		release_at_us;
} HeldPacket;

static HeldPacket held[MAX_HELD];
static size_t head;				/* oldest held packet */
static size_t count;			/* packets held */
static int64_t delay_us;
static volatile sig_atomic_t stop_requested;

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
on_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

/* A packet came in: remember it, to be accepted delay_us from now. */
static int
on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg,
		  struct nfq_data *nfa, void *arg)
{
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	uint32_t	id;

	(void) msg;
	(void) arg;
	if (ph == NULL)
		return 0;
	id = ntohl(ph->packet_id);
	if (count == MAX_HELD)
	{
		/* full: let it through at once rather than lose it */
		nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
		return 0;
	}
	held[(head + count) % MAX_HELD].id = id;
	held[(head + count) % MAX_HELD].release_at_us = now_us() + delay_us;
	count++;
	return 0;
}

/* Accept every held packet whose time has come. */
static void
release_due(struct nfq_q_handle *qh)
{
	int64_t		now = now_us();

	while (count > 0 && held[head].release_at_us <= now)
	{
		nfq_set_verdict(qh, held[head].id, NF_ACCEPT, 0, NULL);
		head = (head + 1) % MAX_HELD;
		count--;
	}
}

int
main(int argc, char **argv)
{
	struct nfq_handle *h;
	struct nfq_q_handle *qh;
	struct sigaction sa;
	char		buf[4096] __attribute__((aligned));
	int			queue;
	int			fd;

	if (argc != 3)
	{
		fprintf(stderr, "usage: %s QUEUE_NUMBER DELAY_MS\n", argv[0]);
		return 2;
	}
	queue = atoi(argv[1]);
	delay_us = (int64_t) atoi(argv[2]) * 1000;
	if (queue < 0 || queue > 65535 || delay_us < 0)
	{
		fprintf(stderr, "%s: bad queue number or delay\n", argv[0]);
		return 2;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	h = nfq_open();
	if (h == NULL)
	{
		perror("nfq_open");
		return 1;
	}
	qh = nfq_create_queue(h, queue, on_packet, NULL);
	if (qh == NULL)
	{
		perror("nfq_create_queue");
		return 1;
	}
	if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0)
	{
		perror("nfq_set_mode");
		return 1;
	}
	nfq_set_queue_maxlen(qh, MAX_HELD);
	/* room in the socket for a burst of queue messages */
	nfnl_rcvbufsiz(nfq_nfnlh(h), 8 * 1024 * 1024);
	fd = nfq_fd(h);

	while (!stop_requested)
	{
		struct pollfd pfd = {.fd = fd,.events = POLLIN};
		int			timeout_ms = 1000;
		int			rc;

		if (count > 0)
		{
			int64_t		wait_us = held[head].release_at_us - now_us();

			timeout_ms = wait_us <= 0 ? 0 : (int) ((wait_us + 999) / 1000);
		}
		rc = poll(&pfd, 1, timeout_ms);
		if (rc < 0 && errno != EINTR)
		{
			perror("poll");
			return 1;
		}
		if (rc > 0)
		{
			ssize_t		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

			if (n > 0)
				nfq_handle_packet(h, buf, (int) n);
			else if (n < 0 && errno != EAGAIN && errno != EINTR && errno != ENOBUFS)
			{
				perror("recv");
				return 1;
			}
			/* ENOBUFS: the kernel dropped queue messages; TCP resends */
		}
		release_due(qh);
	}

	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}
