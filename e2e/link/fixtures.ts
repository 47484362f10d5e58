/** Every transport the conformance suite runs against. */
import type { TransportFixture } from "./fixture.ts";
import { grpcFixture } from "./grpc_fixture.ts";
import { mqttFixture } from "./mqtt_fixture.ts";
import { websocketFixture } from "./websocket_fixture.ts";

export const FIXTURES: TransportFixture[] = [websocketFixture, mqttFixture, grpcFixture];
