"""panoramisk (a real AMI client library) against amihub's AMI listener: login, Ping, Command,
QueueStatus with its events, an event from an Originate, and Logoff, each checked. With
`collide`, a second raw client sends Pings through the PBX with the very ActionIDs panoramisk
uses, at the same time. Prints OK when every check passed.

Usage: panoramisk_check.py HOST PORT USER SECRET alone|collide
"""
import asyncio
import sys

from panoramisk import Manager
from panoramisk.utils import IdGenerator

HOST, PORT, USER, SECRET, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
UID = "fixed-uid"


def ids(n):
    return ["action/%s/1/%d" % (UID, k) for k in range(1, n + 1)]


async def collider():
    """Raw AMI: log in, send Pings with panoramisk's ActionIDs, expect exactly those back."""
    reader, writer = await asyncio.open_connection(HOST, PORT)
    await reader.readline()
    writer.write(("Action: Login\r\nActionID: c-login\r\nUsername: %s\r\nSecret: %s\r\nEvents: off\r\n\r\n"
                  % (USER, SECRET)).encode())
    wanted = ids(12) * 3
    for i in wanted:
        writer.write(("Action: Ping\r\nActionID: %s\r\nServer: pbx1\r\n\r\n" % i).encode())
    await writer.drain()
    got = []
    while len(got) < len(wanted) + 1:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        packet = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
        if packet.get("ActionID") == "c-login":
            assert packet.get("Message") == "Authentication accepted", packet
            got.append("login")
            continue
        assert packet.get("Ping") == "Pong", ("collider got a reply not its own", packet)
        got.append(packet["ActionID"])
    assert sorted(got[1:]) == sorted(wanted), got
    writer.close()


async def library():
    manager = Manager(host=HOST, port=PORT, username=USER, secret=SECRET,
                      ping_delay=3600, forgetable_actions=())
    IdGenerator.reset(uid=UID)
    events = []
    manager.register_event("*", lambda m, msg: events.append(msg))
    await manager.connect()

    pong = await manager.send_action({"Action": "Ping"})
    assert pong.Response == "Success" and pong.Ping == "Pong", pong

    out = await manager.send_action({"Action": "Command", "Command": "core show uptime"})
    lines = out.Output if isinstance(out.Output, list) else [out.Output]
    assert out.Response == "Success" and any("System uptime" in l for l in lines), out

    queue = await manager.send_action({"Action": "QueueStatus"})
    assert queue[0].Response == "Success", queue
    assert queue[-1].Event == "QueueStatusComplete", queue[-1]
    assert any(m.Event == "QueueParams" for m in queue), queue
    assert len({m.ActionID for m in queue}) == 1, queue

    orig = await manager.send_action({"Action": "Originate", "Channel": "Local/100@demo",
                                      "Application": "Wait", "Data": "1", "Async": "true"})
    assert orig[0].Response == "Success", orig
    assert orig[-1].Event == "OriginateResponse", orig
    for _ in range(100):
        if any(e.Event == "Newchannel" and e.Channel.startswith("Local/100@demo") for e in events):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("no Newchannel event from the Originate: %s" % [e.Event for e in events])
    assert all(e.Server == "pbx1" for e in events if e.Event), "events carry Server"

    bye = await manager.send_action({"Action": "Logoff"})
    assert bye.Response == "Goodbye", bye
    manager.close()


async def main():
    jobs = [library()] + ([collider()] if MODE == "collide" else [])
    await asyncio.wait_for(asyncio.gather(*jobs), 40)
    print("OK")


asyncio.run(main())
