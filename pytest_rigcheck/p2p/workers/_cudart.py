"""The CUDA runtime calls the workers need that PyTorch does not expose, through ctypes.

Loads the very ``libcudart`` PyTorch loaded (found in ``/proc/self/maps``), so device state and
streams are shared with torch. Every call's return code is checked; errors carry the call's name.
Stdlib only: the workers import this beside torch.
"""

from __future__ import annotations

import ctypes
import glob
import os

CUDA_MEMCPY_HOST_TO_DEVICE = 1
CUDA_MEMCPY_DEVICE_TO_HOST = 2
CUDA_MEMCPY_DEFAULT = 4
CUDA_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1
CUDA_DEV_ATTR_CLOCK_RATE = 13  # kHz
ERR_PEER_ACCESS_ALREADY_ENABLED = 704
ERR_PEER_ACCESS_NOT_ENABLED = 705


class IpcHandle(ctypes.Structure):
    """``cudaIpcMemHandle_t``: 64 opaque bytes, passed by value to cudaIpcOpenMemHandle."""

    _fields_ = [("reserved", ctypes.c_char * 64)]


class CudaError(RuntimeError):
    """A CUDA runtime call failed: ``call`` and ``code`` name it."""

    def __init__(self, call: str, code: int, text: str) -> None:
        super().__init__(f"{call} failed: cudaError {code} ({text})")
        self.call = call
        self.code = code


def _find_library() -> str:
    with open("/proc/self/maps", encoding="utf-8") as f:
        for line in f:
            path = line.split()[-1] if line.strip() else ""
            if "libcudart.so" in os.path.basename(path):
                return path
    import torch  # the wheel's own copy, when it is not mapped yet

    here = os.path.dirname(torch.__file__)
    for pattern in (
        "lib/libcudart.so*",
        "../nvidia/cu*/lib/libcudart.so*",
        "../nvidia/cuda_runtime/lib/libcudart.so*",
    ):
        found = sorted(glob.glob(os.path.join(here, pattern)))
        if found:
            return found[-1]
    return "libcudart.so"


class Cudart:
    """Typed wrappers over the runtime entry points used for peer copies and IPC."""

    def __init__(self) -> None:
        self.path = _find_library()
        lib = ctypes.CDLL(self.path)
        vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        sigs = {
            "cudaSetDevice": [i],
            "cudaGetErrorString": [i],
            "cudaDeviceCanAccessPeer": [ctypes.POINTER(i), i, i],
            "cudaDeviceEnablePeerAccess": [i, ctypes.c_uint],
            "cudaDeviceDisablePeerAccess": [i],
            "cudaMemcpyPeerAsync": [vp, i, vp, i, sz, vp],
            "cudaMemcpyAsync": [vp, vp, sz, i, vp],
            "cudaMemcpy": [vp, vp, sz, i],
            "cudaDeviceGetPCIBusId": [ctypes.c_char_p, i, i],
            "cudaDeviceGetAttribute": [ctypes.POINTER(i), i, i],
            "cudaMalloc": [ctypes.POINTER(vp), sz],
            "cudaFree": [vp],
            "cudaIpcGetMemHandle": [ctypes.c_char_p, vp],
            "cudaIpcOpenMemHandle": [ctypes.POINTER(vp), IpcHandle, ctypes.c_uint],
            "cudaIpcCloseMemHandle": [vp],
            "cudaDeviceSynchronize": [],
            "cudaGetLastError": [],
        }
        for name, args in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = ctypes.c_char_p if name == "cudaGetErrorString" else ctypes.c_int
        self.lib = lib

    def check(self, call: str, code: int, ok: tuple[int, ...] = ()) -> int:
        if code != 0:
            # Clear the runtime's last-error slot even for an accepted code (704/705): torch reads that slot
            # after its next kernel launch and would raise our harmless "already enabled" as its own error.
            self.lib.cudaGetLastError()
            if code not in ok:
                raise CudaError(call, code, (self.lib.cudaGetErrorString(code) or b"?").decode())
        return code

    def set_device(self, dev: int) -> None:
        self.check("cudaSetDevice", self.lib.cudaSetDevice(dev))

    def can_access_peer(self, dev: int, peer: int) -> bool:
        out = ctypes.c_int(0)
        self.check("cudaDeviceCanAccessPeer", self.lib.cudaDeviceCanAccessPeer(ctypes.byref(out), dev, peer))
        return bool(out.value)

    def enable_peer(self, dev: int, peer: int) -> None:
        self.set_device(dev)
        self.check(
            "cudaDeviceEnablePeerAccess",
            self.lib.cudaDeviceEnablePeerAccess(peer, 0),
            ok=(ERR_PEER_ACCESS_ALREADY_ENABLED,),
        )

    def disable_peer(self, dev: int, peer: int) -> None:
        self.set_device(dev)
        self.check(
            "cudaDeviceDisablePeerAccess",
            self.lib.cudaDeviceDisablePeerAccess(peer),
            ok=(ERR_PEER_ACCESS_NOT_ENABLED,),
        )

    def memcpy_peer_async(
        self, dst: int, dst_dev: int, src: int, src_dev: int, nbytes: int, stream: int
    ) -> None:
        self.check(
            "cudaMemcpyPeerAsync", self.lib.cudaMemcpyPeerAsync(dst, dst_dev, src, src_dev, nbytes, stream)
        )

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.check("cudaMemcpyAsync", self.lib.cudaMemcpyAsync(dst, src, nbytes, kind, stream))

    def memcpy(self, dst: int, src: int, nbytes: int, kind: int = CUDA_MEMCPY_DEFAULT) -> None:
        self.check("cudaMemcpy", self.lib.cudaMemcpy(dst, src, nbytes, kind))

    def pci_bus_id(self, dev: int) -> str:
        buf = ctypes.create_string_buffer(32)
        self.check("cudaDeviceGetPCIBusId", self.lib.cudaDeviceGetPCIBusId(buf, 32, dev))
        # "0000:17:00.0" (some runtimes print an 8-digit domain): spelled as sysfs does, 4-digit domain.
        dom, bus, rest = buf.value.decode().lower().split(":")
        return f"{int(dom, 16):04x}:{bus}:{rest}"

    def attribute(self, attr: int, dev: int) -> int:
        out = ctypes.c_int(0)
        self.check("cudaDeviceGetAttribute", self.lib.cudaDeviceGetAttribute(ctypes.byref(out), attr, dev))
        return out.value

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check("cudaMalloc", self.lib.cudaMalloc(ctypes.byref(ptr), nbytes))
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        self.check("cudaFree", self.lib.cudaFree(ptr))

    def ipc_get_handle(self, ptr: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        self.check("cudaIpcGetMemHandle", self.lib.cudaIpcGetMemHandle(buf, ptr))
        return buf.raw

    def ipc_open(self, handle: bytes) -> int:
        ptr = ctypes.c_void_p()
        raw = IpcHandle.from_buffer_copy(handle)
        self.check(
            "cudaIpcOpenMemHandle",
            self.lib.cudaIpcOpenMemHandle(ctypes.byref(ptr), raw, CUDA_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
        )
        return int(ptr.value or 0)

    def ipc_close(self, ptr: int) -> None:
        self.check("cudaIpcCloseMemHandle", self.lib.cudaIpcCloseMemHandle(ptr))

    def synchronize(self) -> None:
        self.check("cudaDeviceSynchronize", self.lib.cudaDeviceSynchronize())
