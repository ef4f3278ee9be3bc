#!/usr/bin/env python3
"""One unary gRPC call with grpcio, without generated stubs.

    grpc_unary.py PORT [NAME] [--method /pkg.Service/Method] [--host HOST]
                  [--ca CA_FILE --server-name NAME] [--timeout SECONDS]

Sends a HelloRequest {1: name} (protobuf encoded here by hand) to
HOST:PORT (default 127.0.0.1) over h2c, or over TLS when --ca is given
(the server certificate is checked against CA_FILE; --server-name is the
name it must carry, default localhost). Prints

    status=OK
    reply=Hello, NAME

on success (exit 0), or on an RPC error

    status=UNIMPLEMENTED
    code=12
    details=...

(exit 3). Exit 2 for usage errors, 4 when the reply is no HelloReply.
"""
import argparse
import sys

import grpc


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf, pos):
    n = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("bad varint")


def encode_request(name):
    data = name.encode("utf-8")
    return varint((1 << 3) | 2) + varint(len(data)) + data


def decode_reply(buf):
    """Field 1 (string) of a HelloReply; other fields are skipped."""
    pos, message = 0, None
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        num, wtype = key >> 3, key & 7
        if wtype == 0:
            _, pos = read_varint(buf, pos)
        elif wtype == 1:
            pos += 8
        elif wtype == 5:
            pos += 4
        elif wtype == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("field runs past the message")
            if num == 1:
                message = buf[pos:pos + length].decode("utf-8")
            pos += length
        else:
            raise ValueError("unsupported wire type %d" % wtype)
    if pos != len(buf):
        raise ValueError("truncated message")
    return message


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("port", type=int)
    p.add_argument("name", nargs="?", default="World")
    p.add_argument("--method", default="/helloworld.Greeter/SayHello")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ca")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    target = "%s:%d" % (args.host, args.port)
    if args.ca:
        with open(args.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(
            target, creds,
            options=[("grpc.ssl_target_name_override", args.server_name)])
    else:
        channel = grpc.insecure_channel(target)

    call = channel.unary_unary(
        args.method,
        request_serializer=encode_request,
        response_deserializer=decode_reply,
    )
    try:
        reply, info = call.with_call(args.name, timeout=args.timeout)
    except grpc.RpcError as e:
        code = e.code()
        print("status=%s" % code.name)
        print("code=%d" % code.value[0])
        print("details=%s" % (e.details() or ""))
        channel.close()
        return 3
    channel.close()
    print("status=%s" % info.code().name)
    if reply is None:
        print("error=the reply has no field 1")
        return 4
    print("reply=%s" % reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
