/** Hand-written DTS sources shared by the parser tests and the dtc oracle tests (not a test file). */

/** Reference section 3.4: the baseline DTB. */
export const BASELINE = `/dts-v1/;
/ {
    compatible = "multikernel-v1";          /* kerf writes "linux,multikernel-host"; not checked */
    resources {
        cpus = /bits/ 64 <4 5 6 7>;         /* physical CPU ids, u64 each */
        memory@0 {
            size = /bits/ 64 <0x80000000>;  /* bytes, page-aligned, non-zero */
            numa-node-id = <0>;             /* optional u32 */
        };
        /* memory@1 {…} one node per NUMA node, at most MAX_NUMNODES */
        devices {
            nic0 { device-type = "pci"; pci-id = "0000:00:04.0";
                   vendor-id = <0x8086>; device-id = <0x100e>; };
            plat0 { device-type = "platform"; device-name = "serial8250"; /* or acpi-hid = "…" */ };
        };
    };
    aliases { eth0 = "/resources/devices/nic0"; };
};
`;

/** Reference section 3.5: a kerf-style overlay creating an instance. */
export const OVERLAY = `/dts-v1/; /plugin/;
/ {
    compatible = "linux,multikernel-overlay";
    mk,resources = "cpus=2 mem=1G";
    fragment@0 {
        target-path = "/instances";
        __overlay__ {
            instance-create {
                instance-name = "web";
                id = <1>;
                resources {
                    memory-bytes = /bits/ 64 <0x40000000>;
                    cpus = /bits/ 64 <2 3>;
                    numa-nodes = <0>;
                    virtio { net0 { device-id = <1>; queues = <2>; queue-size = <256>; }; };
                };
            };
        };
    };
};
`;

/** Reference section 3.5: cpu and memory operations on the pool, with 32- and 64-bit reg. */
export const POOL_OVERLAY = `/dts-v1/;
/plugin/;
/ {
    fragment@0 {
        target-path = "/resources";
        __overlay__ {
            cpu-add { cpu@8 { reg = /bits/ 64 <8>; numa-node-id = <0>; }; cpu@9 { reg = <9>; flags = <0>; }; };
            memory-remove { memory@100000000 { reg = /bits/ 64 <0x100000000 0x40000000>; }; };
            device-add { pci@0 { pci-id = "0000:00:05.0"; alias = "eth1"; }; };
        };
    };
};
`;

/** dtc's overlay sugar: a path reference at the top level of a plugin becomes a fragment. */
export const SUGAR_OVERLAY = `/dts-v1/;
/plugin/;
/ { compatible = "linux,multikernel-overlay"; };
&{/instances} { instance-remove { instance-name = "web"; }; };
&{/resources} { memory-add { memory@1 { size = /bits/ 64 <0x10000000>; }; }; };
`;

/** Most of the accepted syntax at once. */
export const FEATURES = `/dts-v1/;
/dts-v1/;
// a line comment
m1: /memreserve/ 0x10000000 0x4000;
/memreserve/ (1 << 32) 0x1000;
/ {
    #address-cells = <2>;
    \\#size-cells = <0x2>;
    num = <10 0x1f 017 0 'a' '\\n' '\\'' '\\x41' '\\101' (2 + 3 * 4) (-1) (~0) (!0) (!5) (7 / 2) (7 % 4)
           ((1 << 4) | 2) (0xf0 & 0x3c) (0xf0 ^ 0x3c) (1 < 2) (2 > 1) (2 <= 2) (3 >= 4) (1 == 1) (1 != 1)
           (0 || 3) (2 && 0) (1 ? 5 : 6) (0 ? 5 : 6) (1 << 64) (1 >> 70) (8 >> 1) (3 - 5) 0xffffffffULL 1U 2L 3UL 4LL>;
    wide = /bits/ 64 <0xffffffffffffffff (-2)>, /bits/ 16 <0x1234 (-1)>, /bits/ 8 <0x7f 255 'z'>, /bits/ 32 <5>;
    bytes = [00 ff 0a], [], [deadBEEF], lbl1: [01 lbl2: 02];
    mixed = "a", <1>, [02], "b\\tc\\"d\\\\e\\x7\\08\\q", "", "é";
    strings = "one", "two", "three";
    empty;
    refs = <&target &{/a/b@1} 7>;
    path = &target, &{/a};
    labelled: lprop = v1: <v2: 1 v3: 2 v4:> v5:;
    a {
        b@1 { x = <1>; };
        target: c { };
        t2: t3: d { phandle = <5>; };
        e { };
    };
    gone { };
    keep { p = <1>; q = <2>; /delete-property/ nope; };
};
/ {
    dref = <&t3>;
    a { b@1 { y = <2>; x = <3>; }; new { }; };
    /delete-node/ gone;
    keep { /delete-property/ p; r = <3>; };
};
&target { z = "merged"; };
&{/a/e} { w; };
/delete-node/ &{/a/e};
/ { a { e { revived; }; }; keep { p = <9>; }; };
`;

/** All sources, by name, for the oracle tests. */
export const SOURCES: Record<string, string> = { BASELINE, OVERLAY, POOL_OVERLAY, SUGAR_OVERLAY, FEATURES };
