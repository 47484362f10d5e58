/** The machine a bench ran on, printed beside its figures. */
export interface MachineInfo {
  cores: number;
  memoryGiB: number;
  os: string;
  deno: string;
}

/** Cores, memory, OS and Deno version of this machine. */
export function machineInfo(): MachineInfo {
  return {
    cores: navigator.hardwareConcurrency,
    memoryGiB: +(Deno.systemMemoryInfo().total / 2 ** 30).toFixed(1),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
  };
}
